import ArgumentParser
import DuplexCore
import Foundation

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encode text into SentencePiece ids and pieces, or decode ids (--decode) back to text.",
        discussion: """
            Examples:
              duplex tokenize --tokenizer tokenizer_spm_32k_3.model "Hello, how are you?"
              duplex tokenize --tokenizer tokenizer_spm_32k_3.model --decode 2 1046 264 3
            Decoding also shows each id as Moshi's servers display it: the Python server's piece
            (ids 0 and 3 hidden) and the Rust backend's incremental text.
            """)

    @Option(help: "A SentencePiece .model file (unigram).")
    var tokenizer: String

    @Option(parsing: .upToNextOption, help: "Token ids to decode instead of encoding text.")
    var decode: [Int] = []

    @Option(help: ArgumentHelp(
        "Encode every line of this UTF-8 file; print one JSON object per line: ids and their decode.",
        discussion: "Used by tools/reference/check_tokenizer.py to compare with the sentencepiece library."))
    var lines: String?

    @Argument(help: "Text to encode (several arguments are joined with spaces).")
    var text: [String] = []

    func validate() throws {
        let modes = [!decode.isEmpty, !text.isEmpty, lines != nil].filter { $0 }.count
        if modes != 1 { throw ValidationError("give exactly one of: text to encode, --decode IDS, --lines FILE") }
    }

    func run() throws {
        let tok = try SentencePieceTokenizer(path: tokenizer)
        if let lines {
            try encodeLines(lines, tok)
        } else if decode.isEmpty {
            let input = text.joined(separator: " ")
            let ids = tok.encode(input)
            print("normalized: \(tok.normalize(input))")
            print("ids (\(ids.count)): \(ids.map(String.init).joined(separator: " "))")
            print("pieces:     \(ids.map { tok.piece($0) ?? "?" }.joined(separator: " | "))")
        } else {
            print("text: \(try tok.decode(decode))")
            var incremental = IncrementalDecoder(tokenizer: tok)
            print("id       piece                display (Python server)  incremental (Rust backend)")
            for id in decode {
                let piece = tok.piece(id) ?? "(not in vocabulary)"
                let display = tok.displayText(id).map { $0.debugDescription } ?? "-"
                let step = incremental.push(id).map { $0.debugDescription } ?? "-"
                print(String(id).padding(toLength: 9, withPad: " ", startingAt: 0)
                      + piece.padding(toLength: 21, withPad: " ", startingAt: 0)
                      + display.padding(toLength: 25, withPad: " ", startingAt: 0) + step)
            }
        }
    }

    /// Lines split at "\n" only (a "\r" stays part of its line), the empty tail after a final
    /// newline dropped: the same rule check_tokenizer.py uses.
    private func encodeLines(_ path: String, _ tok: SentencePieceTokenizer) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read \(path)")
        }
        let bytes = [UInt8](data)
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw ValidationError("\(path) is not UTF-8 text")
        }
        // Split bytes, not Characters: Swift reads "\r\n" as one Character.
        var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        struct Line: Encodable { let ids: [Int]; let decoded: String }
        for line in lines {
            let ids = tok.encode(String(decoding: line, as: UTF8.self))
            FileHandle.standardOutput.write(try encoder.encode(Line(ids: ids, decoded: try tok.decode(ids))) + [0x0A])
        }
    }
}
