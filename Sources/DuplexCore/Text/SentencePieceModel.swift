import Foundation

/// Everything that can be wrong with a tokenizer file or a decode request, with a message that
/// names the file and the problem.
public struct SentencePieceError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        /// The file cannot be read.
        case io
        /// The bytes are not a SentencePiece `ModelProto` (empty, truncated, garbage, another format).
        case notSentencePiece
        /// A valid model of a kind this reader does not implement (BPE, WORD, CHAR).
        case unsupported
        /// A SentencePiece model that breaks the library's own rules (no <unk>, duplicate pieces …).
        case invalidModel
        /// An id outside the vocabulary was given to decode.
        case invalidId
    }

    public let kind: Kind
    /// The tokenizer file (or the name the bytes were given), nil for errors about ids.
    public let path: String?
    public let message: String

    public var description: String { path.map { "\($0): \(message)" } ?? message }
}

/// The parts of SentencePiece's `ModelProto` (sentencepiece_model.proto) that encoding and decoding
/// use. Absent fields take the proto2 defaults the schema declares, as the C++ library sees them.
public struct SentencePieceModelProto: Sendable {
    public enum PieceType: Int, Sendable, CaseIterable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    public struct Piece: Sendable {
        /// The piece's bytes (UTF-8 by convention, but the format does not promise it).
        public var bytes: [UInt8] = []
        public var score: Float = 0
        public var type: PieceType = .normal
    }

    public enum ModelType: Int, Sendable {
        case unigram = 1, bpe = 2, word = 3, char = 4
    }

    public struct TrainerSpec: Sendable {
        public var modelTypeValue: Int = 1
        public var vocabSize: Int32 = 8000
        public var byteFallback = false
        public var treatWhitespaceAsSuffix = false
        public var unkPiece: [UInt8] = Array("<unk>".utf8)
        public var bosPiece: [UInt8] = Array("<s>".utf8)
        public var eosPiece: [UInt8] = Array("</s>".utf8)
        public var padPiece: [UInt8] = Array("<pad>".utf8)
        /// What decoding prints for <unk>: " ⁇ " by default.
        public var unkSurface: [UInt8] = Array(" \u{2047} ".utf8)
    }

    public struct NormalizerSpec: Sendable {
        public var name = ""
        /// A Darts double-array trie of source strings and their replacements, compiled from the
        /// rule set named by `name` (e.g. nmt_nfkc) at training time. Empty for "identity".
        public var precompiledCharsmap: [UInt8] = []
        public var addDummyPrefix = true
        public var removeExtraWhitespaces = true
        public var escapeWhitespaces = true
    }

    public var pieces: [Piece] = []
    public var trainerSpec = TrainerSpec()
    public var normalizerSpec = NormalizerSpec()
    public var denormalizerSpec: NormalizerSpec?
    /// Whether the sections were present (every trained model writes both).
    public var hasTrainerSpec = false
    public var hasNormalizerSpec = false

    public init() {}

    /// Parses the serialized proto. Unknown fields are skipped, as protobuf does; a field of a known
    /// number with the wrong wire type is an error (SentencePiece never writes one).
    public init(serialized bytes: [UInt8]) throws(ProtobufError) {
        var reader = ProtobufReader(bytes)
        while let field = try reader.nextField() {
            switch field.number {
            case 1:
                try reader.expect(field, .lengthDelimited, "pieces")
                var sub = try reader.readMessage()
                pieces.append(try Self.parsePiece(&sub))
            case 2:
                try reader.expect(field, .lengthDelimited, "trainer_spec")
                var sub = try reader.readMessage()
                try Self.parseTrainerSpec(&sub, into: &trainerSpec)
                hasTrainerSpec = true
            case 3:
                try reader.expect(field, .lengthDelimited, "normalizer_spec")
                var sub = try reader.readMessage()
                try Self.parseNormalizerSpec(&sub, into: &normalizerSpec)
                hasNormalizerSpec = true
            case 5:
                try reader.expect(field, .lengthDelimited, "denormalizer_spec")
                var sub = try reader.readMessage()
                var spec = denormalizerSpec ?? NormalizerSpec()
                try Self.parseNormalizerSpec(&sub, into: &spec)
                denormalizerSpec = spec
            default:
                try reader.skip(field)
            }
        }
    }

    private static func parsePiece(_ r: inout ProtobufReader) throws(ProtobufError) -> Piece {
        var piece = Piece()
        while let field = try r.nextField() {
            switch field.number {
            case 1:
                try r.expect(field, .lengthDelimited, "SentencePiece.piece")
                piece.bytes = try r.readBytes()
            case 2:
                try r.expect(field, .fixed32, "SentencePiece.score")
                piece.score = try r.readFloat()
            case 3:
                try r.expect(field, .varint, "SentencePiece.type")
                let value = try r.readInt32()
                guard let type = PieceType(rawValue: Int(value)) else {
                    throw r.error("unknown piece type \(value)", at: field.valueOffset)
                }
                piece.type = type
            default:
                try r.skip(field)
            }
        }
        return piece
    }

    private static func parseTrainerSpec(_ r: inout ProtobufReader, into spec: inout TrainerSpec) throws(ProtobufError) {
        while let field = try r.nextField() {
            switch field.number {
            case 3:
                try r.expect(field, .varint, "TrainerSpec.model_type")
                spec.modelTypeValue = Int(try r.readInt32())
            case 4:
                try r.expect(field, .varint, "TrainerSpec.vocab_size")
                spec.vocabSize = try r.readInt32()
            case 24:
                try r.expect(field, .varint, "TrainerSpec.treat_whitespace_as_suffix")
                spec.treatWhitespaceAsSuffix = try r.readBool()
            case 35:
                try r.expect(field, .varint, "TrainerSpec.byte_fallback")
                spec.byteFallback = try r.readBool()
            case 44:
                try r.expect(field, .lengthDelimited, "TrainerSpec.unk_surface")
                spec.unkSurface = try r.readBytes()
            case 45, 46, 47, 48:
                try r.expect(field, .lengthDelimited, "TrainerSpec piece name")
                let name = try r.readBytes()
                switch field.number {
                case 45: spec.unkPiece = name
                case 46: spec.bosPiece = name
                case 47: spec.eosPiece = name
                default: spec.padPiece = name
                }
            default:
                try r.skip(field)
            }
        }
    }

    private static func parseNormalizerSpec(_ r: inout ProtobufReader, into spec: inout NormalizerSpec) throws(ProtobufError) {
        while let field = try r.nextField() {
            switch field.number {
            case 1:
                try r.expect(field, .lengthDelimited, "NormalizerSpec.name")
                spec.name = String(decoding: try r.readBytes(), as: UTF8.self)
            case 2:
                try r.expect(field, .lengthDelimited, "NormalizerSpec.precompiled_charsmap")
                spec.precompiledCharsmap = try r.readBytes()
            case 3:
                try r.expect(field, .varint, "NormalizerSpec.add_dummy_prefix")
                spec.addDummyPrefix = try r.readBool()
            case 4:
                try r.expect(field, .varint, "NormalizerSpec.remove_extra_whitespaces")
                spec.removeExtraWhitespaces = try r.readBool()
            case 5:
                try r.expect(field, .varint, "NormalizerSpec.escape_whitespaces")
                spec.escapeWhitespaces = try r.readBool()
            default:
                try r.skip(field)
            }
        }
    }
}

extension SentencePieceModelProto {
    /// Reads and parses a `.model` file, turning every failure into a `SentencePieceError` that
    /// names the file. Files of other formats the project meets (safetensors) are named as such.
    static func load(path: String) throws(SentencePieceError) -> SentencePieceModelProto {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw SentencePieceError(kind: .io, path: path, message: "no such tokenizer file")
        }
        guard !isDirectory.boolValue else {
            throw SentencePieceError(kind: .io, path: path,
                                     message: "is a folder, expected a SentencePiece .model file")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SentencePieceError(kind: .io, path: path, message: "cannot read the tokenizer file")
        }
        return try parse([UInt8](data), name: path)
    }

    static func parse(_ bytes: [UInt8], name: String) throws(SentencePieceError) -> SentencePieceModelProto {
        func notSP(_ why: String) -> SentencePieceError {
            SentencePieceError(kind: .notSentencePiece, path: name,
                               message: "not a SentencePiece tokenizer model (.model protobuf): \(why)")
        }
        guard !bytes.isEmpty else { throw notSP("the file is empty") }
        if looksLikeSafetensors(bytes) {
            throw notSP("this is a safetensors weight file; the tokenizer is the .model file next to the weights (e.g. tokenizer_spm_32k_3.model)")
        }
        let proto: SentencePieceModelProto
        do {
            proto = try SentencePieceModelProto(serialized: bytes)
        } catch {
            throw notSP("\(error) (file size \(bytes.count) bytes; truncated or another format?)")
        }
        guard !proto.pieces.isEmpty else {
            throw notSP("it parses as protobuf but holds no vocabulary pieces")
        }
        // Sections are written in field order (pieces, trainer_spec, normalizer_spec), so a file
        // cut between two of them still parses; the missing sections give it away.
        let missing = [proto.hasTrainerSpec ? nil : "trainer_spec", proto.hasNormalizerSpec ? nil : "normalizer_spec"]
            .compactMap { $0 }
        guard missing.isEmpty else {
            throw notSP("it has \(proto.pieces.count) pieces but no \(missing.joined(separator: " or ")) section, which every trained model has (truncated file?)")
        }
        return proto
    }

    /// An 8-byte little-endian header length followed by a JSON object that fits in the file.
    private static func looksLikeSafetensors(_ bytes: [UInt8]) -> Bool {
        guard bytes.count > 9 else { return false }
        var length: UInt64 = 0
        for i in 0..<8 { length |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        return bytes[8] == UInt8(ascii: "{") && length <= UInt64(bytes.count - 8)
    }
}
