/// A SentencePiece unigram tokenizer read from a `.model` file, matching the C++ library
/// (sentencepiece 0.2.3, as the Python package runs it) id for id: the text is normalized with the
/// model's own precompiled rules (so nmt_nfkc, nfkc_cf, identity … all behave as trained), then
/// split by the Viterbi path of highest total piece score.
public struct SentencePieceTokenizer: Sendable {
    public typealias PieceType = SentencePieceModelProto.PieceType

    public let proto: SentencePieceModelProto
    /// Piece strings by id (lossy UTF-8 for the rare non-UTF-8 piece).
    public let pieces: [String]
    /// The id of the <unk> piece; nil only in a byte-fallback model without one.
    public let unknownId: Int?
    /// Ids of the control pieces named <s>, </s>, <pad> in the trainer spec, as the library reports them.
    public let bosId: Int?
    public let eosId: Int?
    public let padId: Int?

    private let trie: ByteTrie
    private let normalizer: SentencePieceNormalizer
    let denormalizer: SentencePieceNormalizer?
    private let pieceIds: [[UInt8]: Int]
    /// Ids of the <0xXX> pieces by byte value (empty without byte fallback).
    private let byteIds: [Int]
    /// The byte each id stands for (-1 for pieces that are not <0xXX> byte pieces).
    let byteValues: [Int16]
    private let minScore: Float

    public var vocabularySize: Int { proto.pieces.count }
    public var byteFallback: Bool { proto.trainerSpec.byteFallback }
    public var normalizationRule: String { proto.normalizerSpec.name }

    /// Loads a `.model` file; every problem (missing, not a model, unsupported kind, broken
    /// vocabulary) is a `SentencePieceError` naming the file.
    public init(path: String) throws(SentencePieceError) {
        try self.init(proto: SentencePieceModelProto.load(path: path), name: path)
    }

    public init(serialized bytes: [UInt8], name: String = "tokenizer") throws(SentencePieceError) {
        try self.init(proto: SentencePieceModelProto.parse(bytes, name: name), name: name)
    }

    public init(proto original: SentencePieceModelProto, name: String) throws(SentencePieceError) {
        func invalid(_ message: String) -> SentencePieceError {
            SentencePieceError(kind: .invalidModel, path: name, message: message)
        }
        let modelType = original.trainerSpec.modelTypeValue
        guard modelType == SentencePieceModelProto.ModelType.unigram.rawValue else {
            let kind = SentencePieceModelProto.ModelType(rawValue: modelType).map { "\($0)".uppercased() }
                ?? "unknown (\(modelType))"
            throw SentencePieceError(kind: .unsupported, path: name,
                                     message: "model type \(kind) is not supported; only UNIGRAM SentencePiece models are")
        }
        var proto = original
        let byteFallback = proto.trainerSpec.byteFallback
        // As the library loads a model (sentencepiece_processor.cc Load): with byte fallback, a raw
        // "\0" piece (left by some converters) is demoted to UNUSED.
        if byteFallback {
            for i in proto.pieces.indices where proto.pieces[i].bytes == [0] { proto.pieces[i].type = .unused }
        }
        self.proto = proto

        // The library's own load checks (model_interface.cc InitializePieces, unigram Model).
        var ids: [[UInt8]: Int] = [:]
        var reserved: [[UInt8]: Int] = [:]
        var unk: Int?
        var byteIds = [Int](repeating: -1, count: 256)
        var trieKeys: [(bytes: [UInt8], value: Int32)] = []
        var userDefinedKeys: [(bytes: [UInt8], value: Int32)] = []
        for (id, piece) in proto.pieces.enumerated() {
            let text = String(decoding: piece.bytes, as: UTF8.self)
            guard piece.bytes.count < 8000 else { throw invalid("piece \(id) is \(piece.bytes.count) bytes long (limit 8000)") }
            guard piece.score.isFinite else { throw invalid("piece \(id) '\(text)' has score \(piece.score)") }
            guard !piece.bytes.isEmpty else { throw invalid("piece \(id) is empty") }
            if piece.bytes == [0] && piece.type == .unused { continue }
            guard !piece.bytes.contains(0) else { throw invalid("piece \(id) contains a NUL byte") }
            let isNormal = piece.type == .normal || piece.type == .userDefined || piece.type == .unused
            if isNormal {
                if let other = ids[piece.bytes] { throw invalid("piece '\(text)' is defined twice (ids \(other) and \(id))") }
                ids[piece.bytes] = id
                trieKeys.append((piece.bytes, Int32(id)))
            } else {
                if let other = reserved[piece.bytes] { throw invalid("piece '\(text)' is defined twice (ids \(other) and \(id))") }
                reserved[piece.bytes] = id
            }
            switch piece.type {
            case .userDefined: userDefinedKeys.append((piece.bytes, Int32(id)))
            case .unknown:
                if let unk { throw invalid("two <unk> pieces (ids \(unk) and \(id))") }
                unk = id
            case .byte:
                guard byteFallback else {
                    throw invalid("byte piece '\(text)' (id \(id)) although byte_fallback is off")
                }
                guard let b = Self.byteOfPiece(piece.bytes) else { throw invalid("byte piece '\(text)' (id \(id)) is not of the form <0xXX>") }
                byteIds[Int(b)] = id
            default: break
            }
        }
        // Without an <unk> piece, byte fallback covers every character (the library allows that).
        guard unk != nil || byteFallback else { throw invalid("no <unk> piece (a piece of type UNKNOWN)") }
        if byteFallback, let missing = byteIds.firstIndex(of: -1) {
            throw invalid("byte_fallback is on but the byte piece \(Self.byteName(UInt8(missing))) is missing")
        }
        guard !trieKeys.isEmpty else {
            throw invalid("no normal pieces: the vocabulary cannot cover any text")
        }

        var lookup = ids
        for (k, v) in reserved { lookup[k] = v }  // reserved pieces shadow normal ones, as in PieceToId
        func controlId(_ name: [UInt8]) -> Int? {
            guard let id = lookup[name], proto.pieces[id].type == .control else { return nil }
            return id
        }
        self.pieceIds = lookup
        self.pieces = proto.pieces.map { String(decoding: $0.bytes, as: UTF8.self) }
        self.unknownId = unk
        self.bosId = controlId(proto.trainerSpec.bosPiece)
        self.eosId = controlId(proto.trainerSpec.eosPiece)
        self.padId = controlId(proto.trainerSpec.padPiece)
        self.byteIds = byteFallback ? byteIds : []
        var byteValues = [Int16](repeating: -1, count: proto.pieces.count)
        for (b, id) in byteIds.enumerated() where id >= 0 { byteValues[id] = Int16(b) }
        self.byteValues = byteValues
        self.trie = ByteTrie(keys: trieKeys)
        // The lowest normal score sets the unknown-character penalty.
        var lo = Float.greatestFiniteMagnitude
        for p in proto.pieces where p.type == .normal { lo = min(lo, p.score) }
        self.minScore = lo
        do {
            let matcher = userDefinedKeys.isEmpty ? nil : ByteTrie(keys: userDefinedKeys)
            self.normalizer = try SentencePieceNormalizer(
                spec: proto.normalizerSpec, treatWhitespaceAsSuffix: proto.trainerSpec.treatWhitespaceAsSuffix,
                userDefined: matcher)
            if let spec = proto.denormalizerSpec, !spec.precompiledCharsmap.isEmpty {
                self.denormalizer = try SentencePieceNormalizer(spec: spec, treatWhitespaceAsSuffix: false,
                                                                userDefined: nil)
            } else {
                self.denormalizer = nil
            }
        } catch {
            throw invalid("broken normalization rules: \(error)")
        }
    }

    /// "<0x0A>": the library's spelling of a byte piece (two upper-case hex digits).
    static func byteName(_ b: UInt8) -> String {
        let hex = String(b, radix: 16, uppercase: true)
        return "<0x" + (b < 16 ? "0" : "") + hex + ">"
    }

    static func byteOfPiece(_ bytes: [UInt8]) -> UInt8? {
        let text = String(decoding: bytes, as: UTF8.self)
        guard text.utf8.count == 6, text.hasPrefix("<0x"), let b = UInt8(text.dropFirst(3).prefix(2), radix: 16),
              byteName(b) == text else { return nil }
        return b
    }

    // MARK: - Vocabulary

    /// The piece string of `id` (word starts carry ▁), nil outside the vocabulary.
    public func piece(_ id: Int) -> String? { pieces.indices.contains(id) ? pieces[id] : nil }

    public func pieceType(_ id: Int) -> PieceType? { proto.pieces.indices.contains(id) ? proto.pieces[id].type : nil }

    /// The id of a piece string, or nil when it is not in the vocabulary (the library answers <unk>).
    public func id(of piece: String) -> Int? { pieceIds[Array(piece.utf8)] }

    // MARK: - Encoding

    /// The text as the model sees it before segmentation (spaces as ▁).
    public func normalize(_ text: String) -> String {
        String(decoding: normalizer.normalize(Array(text.utf8)), as: UTF8.self)
    }

    /// Token ids of `text`, without <s>/</s>: what `SentencePieceProcessor.encode(text)` returns.
    public func encode(_ text: String) -> [Int] {
        let normalized = normalizer.normalize(Array(text.utf8))
        var ids: [Int] = []
        var previousUnknown = false
        for (range, id) in viterbi(normalized) {
            if id >= 0 && proto.pieces[id].type == .control {
                ids.append(id)
                previousUnknown = false
                continue
            }
            let isUnknown = id < 0 || id == unknownId || proto.pieces[id].type == .unknown
            if isUnknown && !byteIds.isEmpty {
                // Byte fallback: an unknown character becomes its UTF-8 bytes.
                for b in normalized[range] { ids.append(byteIds[Int(b)]) }
            } else if !(isUnknown && previousUnknown) {
                ids.append(id)  // a run of unknown characters is one <unk>
            }
            previousUnknown = isUnknown
        }
        return ids
    }

    /// Piece strings of `encode(text)`.
    public func encodeAsPieces(_ text: String) -> [String] { encode(text).map { pieces[$0] } }

    /// Best segmentation of the normalized bytes (unigram_model.cc EncodeOptimized, sentencepiece
    /// 0.2.3): for each end position the best-scoring path so far, in float arithmetic, the first
    /// of equal candidates kept. Exact ties are common ("." + "......" vs "......" + "."), so the
    /// order of updates, the float rounding and the library's rebasing of scores beyond ±1e5 are
    /// all reproduced. An unknown character is a one-character node of score min − 10 (id -1 when
    /// the model has no <unk>).
    private func viterbi(_ text: [UInt8]) -> [(Range<Int>, Int)] {
        let n = text.count
        guard n > 0 else { return [] }
        let unknownScore: Float = minScore - 10
        let rebaseThreshold: Float = 100_000
        var best = [Float](repeating: 0, count: n + 1)
        var startsAt = [Int](repeating: -1, count: n + 1)
        var bestId = [Int](repeating: -1, count: n + 1)
        var frontier = 0
        var start = 0
        while start < n {
            var tillHere = best[start]
            if tillHere < -rebaseThreshold || tillHere > rebaseThreshold {
                let offset = tillHere
                if frontier >= start {
                    for i in start...frontier where i == start || startsAt[i] != -1 { best[i] -= offset }
                }
                tillHere = 0
            }
            let charLength = min(SentencePieceUTF8.oneCharLength(text[start]), n - start)
            var hasSingleCharPiece = false
            trie.forEachPrefix(of: text, from: start) { end, value in
                let id = Int(value)
                let type = proto.pieces[id].type
                if type == .unused { return }
                frontier = max(frontier, end)
                let length = end - start
                // User-defined symbols win over any split: 0.1 per extra byte.
                let score: Float = type == .userDefined ? Float(0.1 * Double(length - 1)) : proto.pieces[id].score
                let candidate = score + tillHere
                if startsAt[end] == -1 || candidate > best[end] {
                    best[end] = candidate
                    startsAt[end] = start
                    bestId[end] = id
                }
                if length == charLength { hasSingleCharPiece = true }
            }
            if !hasSingleCharPiece {
                let end = start + charLength
                frontier = max(frontier, end)
                let candidate = unknownScore + tillHere
                if startsAt[end] == -1 || candidate > best[end] {
                    best[end] = candidate
                    startsAt[end] = start
                    bestId[end] = unknownId ?? -1
                }
            }
            start += charLength
        }
        var path: [(Range<Int>, Int)] = []
        var end = n
        while end > 0 {
            let s = startsAt[end]
            guard s >= 0 && s < end else { break }  // unreachable: every character has a path
            path.append((s..<end, bestId[end]))
            end = s
        }
        return path.reversed()
    }
}
