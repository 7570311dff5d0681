/// SentencePiece's precompiled character map: `<trie byte size: u32 LE><Darts-clone double array
/// trie: u32 units><NUL-separated replacement strings>`. The trie maps a byte sequence to the
/// offset of its replacement. Lookups are bounds-checked; a corrupt map misses instead of crashing.
struct PrecompiledCharsMap: Sendable {
    private let units: [UInt32]
    private let replacements: [UInt8]

    /// Checks the map as the library does on load (normalizer.cc Init, darts.h validate), so a
    /// corrupt map is refused up front rather than read out of bounds.
    init(blob: [UInt8]) throws(ProtobufError) {
        func broken(_ why: String) -> ProtobufError {
            ProtobufError(offset: 0, message: "precompiled_charsmap (\(blob.count) bytes) is invalid: \(why)")
        }
        guard blob.count > 4 else { throw broken("too short") }
        let trieSize = Int(blob[0]) | Int(blob[1]) << 8 | Int(blob[2]) << 16 | Int(blob[3]) << 24
        guard trieSize < blob.count - 4 else { throw broken("trie size \(trieSize) exceeds the data") }
        guard trieSize >= 1024 && trieSize % 1024 == 0 else {
            throw broken("trie size \(trieSize) is not a positive multiple of 1024")
        }
        let unitCount = trieSize / 4
        var units = [UInt32](repeating: 0, count: unitCount)
        for i in 0..<unitCount {
            let o = 4 + 4 * i
            units[i] = UInt32(blob[o]) | UInt32(blob[o + 1]) << 8 | UInt32(blob[o + 2]) << 16 | UInt32(blob[o + 3]) << 24
        }
        let replacements = Array(blob[(4 + trieSize)...])
        guard Self.isValid(units, valueLimit: replacements.count) else { throw broken("the double-array trie is corrupt") }
        self.units = units
        self.replacements = replacements
    }

    private static func isValid(_ units: [UInt32], valueLimit: Int) -> Bool {
        let size = units.count
        let root = units[0]
        guard label(root) == 0, !hasLeaf(root), offset(root) != 0, (offset(root) | 0xFF) < size else { return false }
        for i in 1..<size {
            let u = units[i]
            if label(u) <= 0xFF {
                guard ((i ^ offset(u)) | 0xFF) < size else { return false }
                if hasLeaf(u) && label(units[i ^ offset(u)]) <= 0xFF { return false }
            } else if value(u) >= valueLimit {
                return false
            }
        }
        return true
    }

    // Darts-clone unit fields.
    private static func hasLeaf(_ u: UInt32) -> Bool { (u >> 8) & 1 == 1 }
    private static func value(_ u: UInt32) -> Int { Int(u & 0x7FFF_FFFF) }
    private static func label(_ u: UInt32) -> UInt32 { u & 0x8000_00FF }
    private static func offset(_ u: UInt32) -> Int { Int((u >> 10) << ((u & (1 << 9)) >> 6)) }

    /// The longest rule matching a prefix of `bytes[start...]`: (bytes consumed, replacement).
    /// Like the library, only the first 32 matches (shortest first) are considered.
    func longestMatch(_ bytes: [UInt8], from start: Int) -> (length: Int, replacement: ArraySlice<UInt8>)? {
        var nodePos = Self.offset(units[0])
        var best: (length: Int, value: Int)?
        var matches = 0
        var i = start
        while i < bytes.count && matches < 32 {
            let c = bytes[i]
            nodePos ^= Int(c)
            guard nodePos < units.count else { break }
            let unit = units[nodePos]
            guard Self.label(unit) == UInt32(c) else { break }
            nodePos ^= Self.offset(unit)
            i += 1
            if Self.hasLeaf(unit) {
                guard nodePos < units.count else { break }
                best = (i - start, Self.value(units[nodePos]))
                matches += 1
            }
        }
        guard let best, best.value < replacements.count else { return nil }
        // Replacement strings are NUL-terminated.
        let end = replacements[best.value...].firstIndex(of: 0) ?? replacements.count
        return (best.length, replacements[best.value..<end])
    }
}

/// UTF-8 as SentencePiece's C++ code reads it (util.h); its corner cases decide where characters
/// start and which byte runs decode to U+FFFD, so they are reproduced exactly.
enum SentencePieceUTF8 {
    static let spaceSymbol: [UInt8] = [0xE2, 0x96, 0x81]  // U+2581 ▁
    static let replacementCharacter: [UInt8] = [0xEF, 0xBF, 0xBD]  // U+FFFD

    /// Byte length of the character a lead byte starts, from its high nibble alone.
    static func oneCharLength(_ lead: UInt8) -> Int {
        switch lead >> 4 {
        case 0xC, 0xD: 2
        case 0xE: 3
        case 0xF: 4
        default: 1
        }
    }

    /// Whether `bytes[start...]` starts with a well-formed character, and its length (1 when not).
    /// A literal U+FFFD counts as valid, as in `IsValidDecodeUTF8`.
    static func validCharacter(_ bytes: [UInt8], from start: Int) -> (valid: Bool, length: Int) {
        let n = bytes.count - start
        let b0 = UInt32(bytes[start])
        func trail(_ k: Int) -> Bool { bytes[start + k] & 0xC0 == 0x80 }
        func validScalar(_ c: UInt32) -> Bool { c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF) }
        if b0 < 0x80 { return (true, 1) }
        if n >= 2 && b0 & 0xE0 == 0xC0 {
            let c = (b0 & 0x1F) << 6 | UInt32(bytes[start + 1] & 0x3F)
            if trail(1) && c >= 0x80 && validScalar(c) { return (true, 2) }
        } else if n >= 3 && b0 & 0xF0 == 0xE0 {
            let c = (b0 & 0x0F) << 12 | UInt32(bytes[start + 1] & 0x3F) << 6 | UInt32(bytes[start + 2] & 0x3F)
            if trail(1) && trail(2) && c >= 0x800 && validScalar(c) { return (true, 3) }
        } else if n >= 4 && b0 & 0xF8 == 0xF0 {
            let c = (b0 & 0x07) << 18 | UInt32(bytes[start + 1] & 0x3F) << 12
                | UInt32(bytes[start + 2] & 0x3F) << 6 | UInt32(bytes[start + 3] & 0x3F)
            if trail(1) && trail(2) && trail(3) && c >= 0x10000 && validScalar(c) { return (true, 4) }
        }
        return (false, 1)
    }
}

/// SentencePiece's normalizer (normalizer.cc): per-prefix replacement through the precompiled
/// charsmap (longest rule wins; user-defined symbols pass untouched; malformed UTF-8 becomes
/// U+FFFD one byte at a time), then whitespace handling: leading/trailing/repeated spaces dropped
/// (remove_extra_whitespaces), a space added before the text (add_dummy_prefix) or after it
/// (treat_whitespace_as_suffix), and spaces written as ▁ (escape_whitespaces).
struct SentencePieceNormalizer: Sendable {
    let charsMap: PrecompiledCharsMap?
    let userDefined: ByteTrie?
    let addDummyPrefix: Bool
    let removeExtraWhitespaces: Bool
    let escapeWhitespaces: Bool
    let treatWhitespaceAsSuffix: Bool

    init(spec: SentencePieceModelProto.NormalizerSpec, treatWhitespaceAsSuffix: Bool,
         userDefined: ByteTrie?) throws(ProtobufError) {
        charsMap = spec.precompiledCharsmap.isEmpty ? nil : try PrecompiledCharsMap(blob: spec.precompiledCharsmap)
        self.userDefined = userDefined
        addDummyPrefix = spec.addDummyPrefix
        removeExtraWhitespaces = spec.removeExtraWhitespaces
        escapeWhitespaces = spec.escapeWhitespaces
        self.treatWhitespaceAsSuffix = treatWhitespaceAsSuffix
    }

    /// The normalized form of the characters at `start`, and how many input bytes it replaces.
    private func normalizePrefix(_ input: [UInt8], at start: Int) -> (ArraySlice<UInt8>, Int) {
        if let userDefined {
            let n = userDefined.longestPrefix(of: input, from: start)
            if n > 0 { return (input[start..<(start + n)], n) }
        }
        if let charsMap, let match = charsMap.longestMatch(input, from: start) {
            return (match.replacement, match.length)
        }
        let (valid, length) = SentencePieceUTF8.validCharacter(input, from: start)
        if !valid { return (SentencePieceUTF8.replacementCharacter[...], 1) }
        return (input[start..<(start + length)], length)
    }

    func normalize(_ input: [UInt8]) -> [UInt8] {
        let space = UInt8(ascii: " ")
        var pos = 0
        if removeExtraWhitespaces {
            while pos < input.count {
                let (piece, consumed) = normalizePrefix(input, at: pos)
                guard piece.elementsEqual([space]) else { break }
                pos += consumed
            }
        }
        guard pos < input.count else { return [] }

        var out: [UInt8] = []
        out.reserveCapacity(input.count * 3)
        let escapedSpace = escapeWhitespaces ? SentencePieceUTF8.spaceSymbol : [space]
        if !treatWhitespaceAsSuffix && addDummyPrefix { out += escapedSpace }

        var isPrevSpace = removeExtraWhitespaces
        while pos < input.count {
            var (piece, consumed) = normalizePrefix(input, at: pos)
            while isPrevSpace, piece.first == space { piece = piece.dropFirst() }
            if !piece.isEmpty {
                for b in piece {
                    if escapeWhitespaces && b == space { out += SentencePieceUTF8.spaceSymbol } else { out.append(b) }
                }
                isPrevSpace = piece.last == space
            }
            pos += consumed
            if !removeExtraWhitespaces { isPrevSpace = false }
        }

        if removeExtraWhitespaces {
            while out.count >= escapedSpace.count && out.suffix(escapedSpace.count).elementsEqual(escapedSpace) {
                out.removeLast(escapedSpace.count)
            }
        }
        if treatWhitespaceAsSuffix && addDummyPrefix { out += escapedSpace }
        return out
    }
}
