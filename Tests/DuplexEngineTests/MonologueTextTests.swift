import DuplexEngine
import XCTest

final class MonologueTextTests: XCTestCase {
    /// What a terminal shows after printing `output` (backspaces move left, as a terminal does).
    private func screen(_ output: String) -> [String] {
        var lines: [[Character]] = [[]]
        var col = 0
        for ch in output {
            switch ch {
            case "\n": lines.append([]); col = 0
            case "\u{8}": col = max(0, col - 1)
            default:
                if col < lines[lines.count - 1].count { lines[lines.count - 1][col] = ch } else { lines[lines.count - 1].append(ch) }
                col += 1
            }
        }
        return lines.map { String($0).replacingOccurrences(of: " +$", with: "", options: .regularExpression) }
    }

    func testWordsWrapWholeAtTheWidth() {
        var text = MonologueText(width: 20)
        var out = ""
        for piece in [" Hello", " there", ",", " how", " are", " you", " do", "ing", " today", "?"] { out += text.append(piece) }
        let lines = screen(out)
        XCTAssertEqual(lines, ["Hello there, how are", "you doing today?"])
        XCTAssertTrue(lines.allSatisfy { $0.count <= 20 })
    }

    func testAWordBuiltFromFragmentsMovesDownTogether() {
        var text = MonologueText(width: 10)
        var out = ""
        for piece in [" abc", " defg", "hij"] { out += text.append(piece) }
        XCTAssertEqual(screen(out), ["abc", "defghij"])
    }

    func testAWordLongerThanTheLineIsBroken() {
        var text = MonologueText(width: 10)
        let lines = screen(text.append(" abcdefghijklmnopqrstuvwxyz"))
        XCTAssertEqual(lines, ["abcdefghij", "klmnopqrst", "uvwxyz"])
    }
}
