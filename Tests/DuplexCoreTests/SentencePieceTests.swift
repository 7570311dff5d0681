import DuplexCore
import Foundation
import XCTest

/// Parity with the Python `sentencepiece` package on the tiny models of
/// tools/reference/train_tokenizer.py; cases from tools/reference/fixtures_tokenizer.py.
/// Text is compared as UTF-8 bytes: Swift's String equality would hide normalization differences.
final class SentencePieceTests: XCTestCase {
    struct Cases: Decodable {
        struct Piece: Decodable { let piece: String; let type: String }
        struct Encode: Decodable { let text: String; let normalized: String; let ids: [Int] }
        struct Decode: Decodable { let ids: [Int]; let text: String }
        struct Stream: Decodable { let ids: [Int]; let texts: [String?] }
        let format_version: String
        let sentencepiece_version: String
        let model: String
        let pieces: [Piece]
        let encode: [Encode]
        let decode: [Decode]
        let stream: [Stream]
    }

    static let models = ["tokenizer_tiny", "tokenizer_tiny_bytes", "tokenizer_tiny_suffix"]

    func load(_ name: String) throws -> (SentencePieceTokenizer, Cases) {
        let modelPath = try requireFixture("\(name).model", generator: "tokenizer")
        let casesPath = try requireFixture("\(name)_cases.json", generator: "tokenizer")
        let cases = try JSONDecoder().decode(Cases.self, from: Data(contentsOf: URL(fileURLWithPath: casesPath)))
        XCTAssertEqual(cases.format_version, fixtureFormatVersion, "\(name): regenerate with tools/reference/make_fixtures.py")
        return (try SentencePieceTokenizer(path: modelPath), cases)
    }

    func testVocabularyMatchesLibrary() throws {
        let typeNames: [SentencePieceTokenizer.PieceType: String] = [
            .normal: "normal", .unknown: "unknown", .control: "control", .userDefined: "user_defined",
            .unused: "unused", .byte: "byte",
        ]
        for name in Self.models {
            let (tok, cases) = try load(name)
            XCTAssertEqual(tok.vocabularySize, cases.pieces.count, name)
            for (id, p) in cases.pieces.enumerated() where id < tok.vocabularySize {
                XCTAssertEqual(tok.piece(id).map { Array($0.utf8) }, Array(p.piece.utf8), "\(name) piece \(id)")
                XCTAssertEqual(tok.pieceType(id).flatMap { typeNames[$0] }, p.type, "\(name) type of \(id) '\(p.piece)'")
                XCTAssertEqual(tok.id(of: p.piece), id, "\(name) id of '\(p.piece)'")
            }
            XCTAssertEqual(tok.unknownId, 0, name)
            XCTAssertEqual(tok.bosId, 1, name)
            XCTAssertEqual(tok.eosId, 2, name)
            XCTAssertEqual(tok.padId, 3, name)
        }
    }

    func testNormalizeMatchesLibrary() throws {
        for name in Self.models {
            let (tok, cases) = try load(name)
            var failures: [String] = []
            for c in cases.encode where Array(tok.normalize(c.text).utf8) != Array(c.normalized.utf8) {
                failures.append("\(c.text.debugDescription): got \(tok.normalize(c.text).debugDescription), expected \(c.normalized.debugDescription)")
            }
            XCTAssert(failures.isEmpty, "\(name): \(failures.count)/\(cases.encode.count) normalizations differ:\n"
                      + failures.prefix(5).joined(separator: "\n"))
        }
    }

    func testEncodeMatchesLibrary() throws {
        for name in Self.models {
            let (tok, cases) = try load(name)
            XCTAssertGreaterThan(cases.encode.count, 300)
            var failures: [String] = []
            for c in cases.encode {
                let ids = tok.encode(c.text)
                if ids != c.ids {
                    failures.append("\(c.text.debugDescription): got \(ids) \(ids.map { tok.piece($0) ?? "?" }), expected \(c.ids) \(c.ids.map { tok.piece($0) ?? "?" })")
                }
            }
            XCTAssert(failures.isEmpty, "\(name): \(failures.count)/\(cases.encode.count) encodings differ:\n"
                      + failures.prefix(5).joined(separator: "\n"))
        }
    }

    func testDecodeMatchesLibrary() throws {
        for name in Self.models {
            let (tok, cases) = try load(name)
            var failures: [String] = []
            for c in cases.decode {
                let text = try tok.decode(c.ids)
                if Array(text.utf8) != Array(c.text.utf8) {
                    failures.append("\(c.ids): got \(text.debugDescription), expected \(c.text.debugDescription)")
                }
            }
            XCTAssert(failures.isEmpty, "\(name): \(failures.count)/\(cases.decode.count) decodes differ:\n"
                      + failures.prefix(5).joined(separator: "\n"))
        }
    }

    /// The Rust backend's per-token text (decode of [previous, current] minus decode of [previous]).
    func testIncrementalDecoderMatchesRustBackendRule() throws {
        for name in Self.models {
            let (tok, cases) = try load(name)
            var failures: [String] = []
            for c in cases.stream {
                var decoder = IncrementalDecoder(tokenizer: tok)
                let texts = c.ids.map { decoder.push($0) }
                if texts.map({ $0.map { Array($0.utf8) } }) != c.texts.map({ $0.map { Array($0.utf8) } }) {
                    failures.append("\(c.ids): got \(texts), expected \(c.texts)")
                }
            }
            XCTAssert(failures.isEmpty, "\(name): \(failures.count)/\(cases.stream.count) streams differ:\n"
                      + failures.prefix(3).joined(separator: "\n"))
        }
    }

    /// Python server display: skip EPAD (0), PAD (3) and the LM-only start id; ▁ as a space.
    func testDisplayText() throws {
        let (tok, cases) = try load("tokenizer_tiny")
        XCTAssertNil(tok.displayText(0))
        XCTAssertNil(tok.displayText(3))
        XCTAssertNil(tok.displayText(32000))
        XCTAssertNil(tok.displayText(-1))
        XCTAssertNil(tok.displayText(tok.vocabularySize))
        var words = 0
        for (id, p) in cases.pieces.enumerated() where ![0, 3].contains(id) {
            let expected = p.piece.replacingOccurrences(of: "\u{2581}", with: " ")
            XCTAssertEqual(tok.displayText(id).map { Array($0.utf8) }, Array(expected.utf8), "display of \(id)")
            if p.piece.hasPrefix("\u{2581}") && p.piece.count > 1 { words += 1 }
        }
        XCTAssertGreaterThan(words, 10, "the model should have word-start pieces")
        let ids = tok.encode("Hello world")
        XCTAssertEqual(try tok.transcript([0, 3] + ids + [3, 0]), try tok.decode(ids))
    }

    func testDecodeRejectsIdOutsideVocabulary() throws {
        let (tok, _) = try load("tokenizer_tiny")
        for bad in [-1, tok.vocabularySize, 32000] {
            XCTAssertThrowsError(try tok.decode([5, bad])) { error in
                guard let e = error as? SentencePieceError else { return XCTFail("\(error)") }
                XCTAssertEqual(e.kind, .invalidId)
                XCTAssert(e.description.contains("\(bad)"), e.description)
            }
        }
        var decoder = IncrementalDecoder(tokenizer: tok)
        XCTAssertNil(decoder.push(99999))
    }

    // MARK: - Bad input

    func assertNotAModel(_ bytes: [UInt8], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let path = temporaryPath("bad-\(what.filter { $0.isLetter || $0.isNumber }).model")
        XCTAssert(FileManager.default.createFile(atPath: path, contents: Data(bytes)), "cannot write \(path)")
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertThrowsError(try SentencePieceTokenizer(path: path), what, file: file, line: line) { error in
            guard let e = error as? SentencePieceError else { return XCTFail("\(what): \(error)", file: file, line: line) }
            XCTAssertEqual(e.kind, .notSentencePiece, "\(what): \(e)", file: file, line: line)
            XCTAssert(e.description.contains(path), "\(what): message must name the file: \(e)", file: file, line: line)
        }
    }

    func testEmptyFileIsRejected() {
        assertNotAModel([], "empty")
    }

    func testTruncatedFilesAreRejected() throws {
        for name in ["tokenizer_tiny_bytes", "tokenizer_tiny_suffix"] {
            let path = try requireFixture("\(name).model", generator: "tokenizer")
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            XCTAssertNoThrow(try SentencePieceTokenizer(serialized: bytes))
            var lengths = Array(stride(from: 1, to: bytes.count, by: 41))
            lengths += [bytes.count - 1, bytes.count - 2, bytes.count / 2]
            for n in lengths {
                XCTAssertThrowsError(try SentencePieceTokenizer(serialized: Array(bytes[..<n]), name: "cut")) { error in
                    XCTAssertEqual((error as? SentencePieceError)?.kind, .notSentencePiece, "\(name) cut at \(n): \(error)")
                }
            }
        }
        // One file through the path-taking initializer, for the message.
        do {
            let path = try requireFixture("tokenizer_tiny.model", generator: "tokenizer")
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            assertNotAModel(Array(bytes[..<(bytes.count * 2 / 3)]), "truncated")
        }
    }

    func testRandomBytesAreRejected() {
        var rng = SplitMix64(seed: 77)
        for trial in 0..<40 {
            let n = 1 + Int(rng.nextFloat() * 3000)
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: Int(rng.nextFloat() * 256)) }
            XCTAssertThrowsError(try SentencePieceTokenizer(serialized: bytes, name: "random\(trial)")) { error in
                XCTAssertEqual((error as? SentencePieceError)?.kind, .notSentencePiece, "random \(trial): \(error)")
            }
        }
        assertNotAModel(Array("this is a plain text file, not a tokenizer\n".utf8), "text")
    }

    func testSafetensorsFileIsNamedAsSuch() throws {
        let path = try requireFixture("ops.safetensors", generator: "ops")
        XCTAssertThrowsError(try SentencePieceTokenizer(path: path)) { error in
            guard let e = error as? SentencePieceError else { return XCTFail("\(error)") }
            XCTAssertEqual(e.kind, .notSentencePiece)
            XCTAssert(e.description.contains("safetensors") && e.description.contains(path), e.description)
        }
    }

    func testMissingFileAndFolder() {
        XCTAssertThrowsError(try SentencePieceTokenizer(path: "/nonexistent/tokenizer.model")) { error in
            XCTAssertEqual((error as? SentencePieceError)?.kind, .io)
            XCTAssert("\(error)".contains("/nonexistent/tokenizer.model"))
        }
        XCTAssertThrowsError(try SentencePieceTokenizer(path: NSTemporaryDirectory())) { error in
            XCTAssertEqual((error as? SentencePieceError)?.kind, .io)
        }
    }

    func testUnsupportedAndInvalidModelsAreRejected() throws {
        let (tok, _) = try load("tokenizer_tiny_bytes")
        var bpe = tok.proto
        bpe.trainerSpec.modelTypeValue = 2
        XCTAssertThrowsError(try SentencePieceTokenizer(proto: bpe, name: "bpe.model")) { error in
            XCTAssertEqual((error as? SentencePieceError)?.kind, .unsupported)
            XCTAssert("\(error)".contains("BPE"), "\(error)")
        }
        // Without <unk>, only a byte-fallback model can cover every character.
        var noUnk = try load("tokenizer_tiny").0.proto
        noUnk.pieces[0].type = .control
        XCTAssertThrowsError(try SentencePieceTokenizer(proto: noUnk, name: "x")) { error in
            XCTAssertEqual((error as? SentencePieceError)?.kind, .invalidModel, "\(error)")
        }
        var bytesNoUnk = tok.proto
        bytesNoUnk.pieces[0].type = .control
        let bytesOnly = try SentencePieceTokenizer(proto: bytesNoUnk, name: "x")
        XCTAssertNil(bytesOnly.unknownId)
        // Unknown characters still fall back to bytes: the library's ids with <unk> present.
        for c in try load("tokenizer_tiny_bytes").1.encode.prefix(100) {
            XCTAssertEqual(bytesOnly.encode(c.text), c.ids, c.text.debugDescription)
        }
        var brokenRules = try load("tokenizer_tiny").0.proto
        brokenRules.normalizerSpec.precompiledCharsmap = Array(brokenRules.normalizerSpec.precompiledCharsmap.prefix(2000))
        XCTAssertThrowsError(try SentencePieceTokenizer(proto: brokenRules, name: "x")) { error in
            XCTAssertEqual((error as? SentencePieceError)?.kind, .invalidModel, "\(error)")
            XCTAssert("\(error)".contains("precompiled_charsmap"), "\(error)")
        }
        var nanScore = tok.proto
        nanScore.pieces[300].score = .nan
        XCTAssertThrowsError(try SentencePieceTokenizer(proto: nanScore, name: "x")) { error in
            XCTAssertEqual((error as? SentencePieceError)?.kind, .invalidModel, "\(error)")
        }
        var duplicate = tok.proto
        duplicate.pieces[300].bytes = duplicate.pieces[301].bytes
        XCTAssertThrowsError(try SentencePieceTokenizer(proto: duplicate, name: "x")) { error in
            XCTAssertEqual((error as? SentencePieceError)?.kind, .invalidModel, "\(error)")
        }
        var missingByte = tok.proto
        missingByte.pieces[4 + 0x41].type = .normal  // <0x41> no longer a byte piece
        XCTAssertThrowsError(try SentencePieceTokenizer(proto: missingByte, name: "x")) { error in
            XCTAssert("\(error)".contains("<0x41>"), "\(error)")
        }
    }
}
