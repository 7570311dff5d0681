import DuplexCore
@testable import DuplexEngine
import Foundation
import XCTest

/// Word timing and padding of `duplex transcribe`, on the tiny tokenizer (exact: the rules are discrete).
final class TranscriberTests: XCTestCase {
    private func tokenizer() throws -> SentencePieceTokenizer {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("DuplexCoreTests/Fixtures/tokenizer_tiny.model").path
        return try SentencePieceTokenizer(path: path)
    }

    private var sttConfig: LMConfig {
        var c = LMConfig()
        c.kind = .stt
        c.depQ = 0
        c.nQ = 32
        c.textCard = 500
        c.textCardOut = 500
        c.delays = [Int](repeating: 0, count: 33)
        c.sttSilencePrefixSeconds = 0.16
        c.sttAudioDelaySeconds = 0.24
        return c
    }

    func testWordsAreAssembledFromPiecesWithTheirTimes() throws {
        let t = try tokenizer()
        let words = ["hello", "world", "seven"]
        let ids = words.map { t.encode($0) }
        XCTAssertTrue(ids.contains { $0.count > 1 }, "the test needs a word of several pieces: \(ids)")
        var a = WordAssembler(tokenizer: t, config: sttConfig)
        var got: [WordAssembler.Word] = []
        var frame = 10
        for pieces in ids {
            for id in pieces {
                if let w = a.push(Int32(id), frame: frame) { got.append(w) }
                frame += 1
            }
            for _ in 0..<3 {   // PAD between words
                if let w = a.push(3, frame: frame) { got.append(w) }
                frame += 1
            }
        }
        if let w = a.flush(frame: frame) { got.append(w) }
        XCTAssertEqual(got.map(\.text), words)
        // Frame f is at f × 80 ms − (0.16 + 0.24) s.
        let starts = ids.indices.map { i in 10 + ids[..<i].reduce(0) { $0 + $1.count + 3 } }
        for (i, w) in got.enumerated() {
            XCTAssertEqual(w.start, Double(starts[i]) * 0.08 - 0.4, accuracy: 1e-9, w.text)
            let end = i + 1 < starts.count ? Double(starts[i + 1]) * 0.08 - 0.4 : Double(frame) * 0.08 - 0.4
            XCTAssertEqual(w.end, end, accuracy: 1e-9, w.text)
        }
        XCTAssertEqual(a.time(ofFrame: 2), 0, "times before the audio clamp to 0")
    }

    func testByteFallbackPiecesMakeTheirCharacters() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("DuplexCoreTests/Fixtures/tokenizer_tiny_bytes.model").path
        let t = try SentencePieceTokenizer(path: path)
        let ids = t.encode("🙂x")
        XCTAssertTrue(ids.contains { t.piece($0)?.hasPrefix("<0x") == true }, "the word must need byte pieces: \(ids.map { t.piece($0) ?? "?" })")
        var c = sttConfig
        c.textCard = 800
        c.textCardOut = 800
        var a = WordAssembler(tokenizer: t, config: c)
        var words: [WordAssembler.Word] = []
        for (i, id) in ids.enumerated() { if let w = a.push(Int32(id), frame: 20 + i) { words.append(w) } }
        if let w = a.flush(frame: 30) { words.append(w) }
        XCTAssertEqual(words.map(\.text), ["🙂x"])
    }

    func testPaddedSourceAddsSilenceAroundTheInput() throws {
        let signal = (0..<10).map { Float($0 + 1) }
        let source = PaddedSource(SignalSource(signal), prefix: 3, suffix: 4)
        var out: [Float] = []
        var buffer = [Float](repeating: -1, count: 5)
        while try buffer.withUnsafeMutableBufferPointer({ try source.read(into: $0.baseAddress!, count: 5) }) {
            out += buffer
        }
        XCTAssertEqual(Array(out.prefix(3)), [0, 0, 0])
        XCTAssertEqual(Array(out[3..<13]), signal)
        XCTAssertTrue(out[13...].allSatisfy { $0 == 0 })
        XCTAssertGreaterThanOrEqual(out.count, 17, "the whole tail comes out")
        XCTAssertEqual(out.count % 5, 0)
    }
}
