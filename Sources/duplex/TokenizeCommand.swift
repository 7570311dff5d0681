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

    @Argument(help: "Text to encode (several arguments are joined with spaces).")
    var text: [String] = []

    func validate() throws {
        if decode.isEmpty && text.isEmpty { throw ValidationError("give text to encode, or --decode IDS") }
        if !decode.isEmpty && !text.isEmpty { throw ValidationError("give either text or --decode IDS, not both") }
    }

    func run() throws {
        let tok = try SentencePieceTokenizer(path: tokenizer)
        if decode.isEmpty {
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
}
