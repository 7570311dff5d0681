extension SentencePieceTokenizer {
    /// Text of `ids`, as `SentencePieceProcessor.decode(ids)` (0.2.3) gives it: ▁ becomes a space, the
    /// space before the first word is dropped, runs of <0xXX> byte pieces are assembled into UTF-8
    /// (each malformed byte as U+FFFD), control pieces (<s>, </s>, <pad> …) vanish and <unk> reads
    /// " ⁇ ". An id outside the vocabulary is an error, as in the library.
    public func decode(_ ids: [Int]) throws(SentencePieceError) -> String {
        String(decoding: try decodeBytes(ids), as: UTF8.self)
    }

    /// `decode` as UTF-8 bytes.
    public func decodeBytes(_ ids: [Int]) throws(SentencePieceError) -> [UInt8] {
        if let bad = ids.first(where: { !proto.pieces.indices.contains($0) }) {
            throw SentencePieceError(kind: .invalidId, path: nil,
                                     message: "token id \(bad) is outside the tokenizer's vocabulary (0..<\(vocabularySize))")
        }
        var text: [UInt8] = []
        var pendingBytes: [UInt8] = []
        func flushBytes() {
            var offset = 0
            while offset < pendingBytes.count {
                let (valid, length) = SentencePieceUTF8.validCharacter(pendingBytes, from: offset)
                if valid {
                    text += pendingBytes[offset..<(offset + length)]
                } else {
                    text += SentencePieceUTF8.replacementCharacter
                }
                offset += length
            }
            pendingBytes.removeAll(keepingCapacity: true)
        }
        // The library (DecodeOptimized) strips a leading ▁ from pieces until some text has been
        // written, or, without remove_extra_whitespaces, until one ▁ was stripped.
        let spec = proto.normalizerSpec
        let stripsLeadingSpace = spec.addDummyPrefix || spec.removeExtraWhitespaces
        var atStart = true
        for id in ids {
            let piece = proto.pieces[id]
            if byteValues[id] >= 0 {
                pendingBytes.append(UInt8(byteValues[id]))
                continue
            }
            flushBytes()
            if !text.isEmpty { atStart = false }
            if piece.type == .control { continue }
            var bytes = piece.bytes[...]
            var strippedSpace = false
            if atStart && stripsLeadingSpace && bytes.starts(with: SentencePieceUTF8.spaceSymbol) {
                bytes = bytes.dropFirst(SentencePieceUTF8.spaceSymbol.count)
                strippedSpace = !spec.removeExtraWhitespaces
            }
            if id == unknownId || piece.type == .unknown {
                text += proto.trainerSpec.unkSurface
            } else {
                Self.appendReplacingSpaceSymbol(bytes, to: &text)
            }
            if strippedSpace || !text.isEmpty { atStart = false }
        }
        flushBytes()
        if let denormalizer { text = denormalizer.normalize(text) }
        return text
    }

    private static func appendReplacingSpaceSymbol(_ bytes: ArraySlice<UInt8>, to text: inout [UInt8]) {
        var i = bytes.startIndex
        while i < bytes.endIndex {
            if bytes[i...].starts(with: SentencePieceUTF8.spaceSymbol) {
                text.append(UInt8(ascii: " "))
                i += SentencePieceUTF8.spaceSymbol.count
            } else {
                text.append(bytes[i])
                i += 1
            }
        }
    }

    // MARK: - Display of a model's text stream (spec §5)

    /// What Moshi's Python server shows for one sampled text token: the piece with ▁ as a space
    /// (so a word start carries its leading space; byte pieces show as "<0xXX>"); nil for the
    /// stream's special ids and ids outside the vocabulary.
    public func displayText(_ id: Int, special: TextStreamSpecialIds = .moshi) -> String? {
        guard !special.contains(id), let piece = piece(id) else { return nil }
        return piece.replacingSpaceSymbol()
    }

    /// Transcript of a whole text stream: the decode of its non-special ids (the Rust backend's log).
    public func transcript(_ ids: [Int], special: TextStreamSpecialIds = .moshi) throws(SentencePieceError) -> String {
        try decode(ids.filter { !special.contains($0) })
    }
}

/// Ids of a model's text stream that carry no text (spec §3.2, §5).
public struct TextStreamSpecialIds: Sendable, Equatable {
    /// End of padding / new word ("eop" in the Rust backend).
    public var epad: Int
    public var pad: Int
    /// The LM's initial text token; not a tokenizer id.
    public var start: Int

    public init(epad: Int, pad: Int, start: Int) {
        self.epad = epad
        self.pad = pad
        self.start = start
    }

    public static let moshi = TextStreamSpecialIds(epad: 0, pad: 3, start: 32000)

    public func contains(_ id: Int) -> Bool { id == epad || id == pad || id == start }
}

/// Text of a token stream, one token at a time, as Kyutai's Rust backend emits it: decode the pair
/// [previous token, new token] and keep what goes beyond the decode of the previous token alone.
/// This spaces words properly and joins byte pieces the way a whole-sequence decode would.
/// The previous token is whatever was sampled last (pads included); after the start token the new
/// token is decoded alone.
public struct IncrementalDecoder: Sendable {
    public let tokenizer: SentencePieceTokenizer
    public let special: TextStreamSpecialIds
    private var previous: Int

    public init(tokenizer: SentencePieceTokenizer, special: TextStreamSpecialIds = .moshi) {
        self.tokenizer = tokenizer
        self.special = special
        self.previous = special.start
    }

    public mutating func reset() { previous = special.start }

    /// The text the token `id` adds: nil for special ids and for ids the tokenizer cannot decode,
    /// possibly "" (a byte piece that does not complete a character, a control piece).
    public mutating func push(_ id: Int) -> String? {
        defer { previous = id }
        guard !special.contains(id) else { return nil }
        if previous == special.start {
            return try? tokenizer.decode([id])
        }
        guard let alone = try? tokenizer.decodeBytes([previous]),
              let pair = try? tokenizer.decodeBytes([previous, id]) else { return nil }
        guard pair.count > alone.count else { return "" }
        return String(decoding: pair[alone.count...], as: UTF8.self)
    }
}

extension String {
    /// SentencePiece's word-boundary mark ▁ (U+2581) as an ASCII space.
    func replacingSpaceSymbol() -> String {
        String(String.UnicodeScalarView(unicodeScalars.map { $0 == "\u{2581}" ? " " : $0 }))
    }
}
