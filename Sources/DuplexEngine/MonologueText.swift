/// Lays out the inner monologue as it streams in, piece by piece, wrapped at word boundaries to
/// a terminal width (pieces that start with a space begin a word; others continue the last one).
/// Pure text logic; the terminal code prints what it returns.
public struct MonologueText: Sendable {
    public let width: Int
    private(set) var column = 0
    private var word = ""          // the word being built (not yet known to be complete)
    private var wordStartColumn = 0

    public init(width: Int) {
        self.width = max(10, width)
    }

    /// Returns the characters to print for `piece` (may include newlines). A word that would cross
    /// the right edge moves to the next line as a whole, including the part already printed.
    public mutating func append(_ piece: String) -> String {
        var out = ""
        for ch in piece {
            if ch == "\n" {
                out.append("\n")
                column = 0
                word = ""
                continue
            }
            if ch == " " {
                word = ""
                if column == 0 { continue }       // no leading spaces on a new line
                if column + 1 >= width {
                    out.append("\n")
                    column = 0
                    continue
                }
                out.append(" ")
                column += 1
                continue
            }
            if word.isEmpty { wordStartColumn = column }
            word.append(ch)
            if column + 1 > width {
                if wordStartColumn > 0 && word.count < width {
                    // Move the whole word down: erase what was printed of it on this line.
                    let printed = word.count - 1
                    out.append(String(repeating: "\u{8}", count: printed) + String(repeating: " ", count: printed))
                    out.append("\n" + word)
                    column = word.count
                    wordStartColumn = 0
                } else {
                    out.append("\n")
                    out.append(ch)
                    column = 1
                    word = String(ch)
                    wordStartColumn = 0
                }
                continue
            }
            out.append(ch)
            column += 1
        }
        return out
    }
}
