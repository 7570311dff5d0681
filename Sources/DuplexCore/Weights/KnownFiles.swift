import Foundation

/// Files of Kyutai's (and NVIDIA's) released repos, known by SHA-256 (the leading 32 bits, as
/// third-party installers pin them; with the byte size where it is known), so `duplex info` can
/// say which release a file is — and tell apart files with the same names and sizes but other
/// weights (the two Mimis). Sources: shared/reference/checkpoint-compat.md; Hibiki's two files from
/// third-party integrity pins (full SHA-256 and size; they agree with the compat notes' sizes).
public struct KnownFile: Sendable, Equatable {
    public let sha256Prefix: String
    public let size: Int?
    public let name: String
    public let repo: String
    public let what: String

    public static let table: [KnownFile] = [
        KnownFile(sha256Prefix: "5b835c66", size: nil, name: "model.safetensors", repo: "kyutai/moshiko-pytorch-bf16 (rev 2bfc9ae6)",
                  what: "moshiko 7B LM, bf16 (male voice)"),
        KnownFile(sha256Prefix: "e0a5a1c7", size: nil, name: "model.safetensors", repo: "kyutai/moshika-pytorch-bf16 (rev a49141e2)",
                  what: "moshika 7B LM, bf16 (female voice)"),
        KnownFile(sha256Prefix: "db1290db", size: 16_742_874_000, name: "model.safetensors", repo: "nvidia/personaplex-7b-v1 (rev fdaf4090)",
                  what: "PersonaPlex 7B LM, bf16 (dep_q 16; needs its persona mode)"),
        KnownFile(sha256Prefix: "09b782f0", size: 384_644_900, name: "tokenizer-e351c8d8-checkpoint125.safetensors",
                  repo: "Kyutai's Mimi e351c8d8@125 (moshiko, moshika, PersonaPlex, STT, TTS repos)", what: "Mimi codec, the one Moshi was trained with"),
        KnownFile(sha256Prefix: "31c14cf3", size: 384_644_900, name: "mimi-dbaa9758@125.safetensors",
                  repo: "Mimi dbaa9758@125 (lmz/moshi-swift, kyutai/hibiki-1b-mlx-bf16)",
                  what: "another Mimi training run: Moshi's names and size, other weights (wrong for moshiko/moshika)"),
        KnownFile(sha256Prefix: "78d43365", size: 552_778, name: "tokenizer_spm_32k_3.model", repo: "Moshi's repos (moshiko, moshika, PersonaPlex)",
                  what: "Moshi's SentencePiece text tokenizer (32k)"),
        KnownFile(sha256Prefix: "2471add7", size: 5_234_275_128, name: "model.safetensors", repo: "kyutai/stt-2.6b-en (rev a07aec56)",
                  what: "Kyutai STT 2.6B (English)"),
        KnownFile(sha256Prefix: "b9e97c53", size: 1_978_522_200, name: "model.safetensors", repo: "kyutai/stt-1b-en_fr-candle (rev 095e38f6)",
                  what: "Kyutai STT 1B (English/French, with semantic-VAD heads)"),
        KnownFile(sha256Prefix: "cd87dd5d", size: 120_378, name: "tokenizer_en_fr_audio_8000.model", repo: "kyutai/stt-1b-en_fr, kyutai/tts-1.6b-en_fr",
                  what: "STT/TTS en/fr text tokenizer (8k)"),
        KnownFile(sha256Prefix: "2d1baa58", size: 3_600_043_224, name: "hibiki-mlx-dc2cf5a5@80.safetensors", repo: "kyutai/hibiki-1b-mlx-bf16",
                  what: "Hibiki 1B LM for MLX, bf16 (fr→en translation; pairs with Mimi dbaa9758)"),
        KnownFile(sha256Prefix: "c22110fb", size: 857_314, name: "tokenizer_spm_48k_multi6_2.model", repo: "Kyutai's Hibiki repos",
                  what: "Hibiki's multilingual SentencePiece tokenizer (48k)"),
        KnownFile(sha256Prefix: "726ddadd", size: 3_683_719_712, name: "dsm_tts_1e68beda@240.safetensors", repo: "kyutai/tts-1.6b-en_fr (rev f6543960)",
                  what: "Kyutai TTS 1.6B (text-to-speech, not a duplex model)"),
    ]

    /// The entry a file's hash and size stand for.
    public static func identify(sha256 hex: String, size: Int) -> KnownFile? {
        table.first { hex.hasPrefix($0.sha256Prefix) && ($0.size == nil || $0.size == size) }
    }
}

/// SHA-256 (FIPS 180-4) of a file, streamed, and a cache of it beside the file
/// (`FILE.sha256`: the hex digest, the size and the modification time it was taken at), so a
/// multi-gigabyte checkpoint is hashed once.
public enum FileHash {
    public static func sha256(of bytes: some Collection<UInt8>) -> String {
        var h = SHA256State()
        if bytes.withContiguousStorageIfAvailable({ h.update($0) }) == nil {
            [UInt8](bytes).withUnsafeBufferPointer { h.update($0) }
        }
        return h.finish()
    }

    /// The digest of `path`, from its cache when the cache matches the file's size and time;
    /// else computed (`progress(done, total)` in bytes) and cached if the folder is writable.
    /// `cached` says which.
    public static func sha256(file path: String, progress: (Int, Int) -> Void = { _, _ in }) throws -> (hex: String, cached: Bool) {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        let size = (attributes[.size] as? Int) ?? 0
        let mtime = Int(((attributes[.modificationDate] as? Date) ?? Date(timeIntervalSince1970: 0)).timeIntervalSince1970)
        let cachePath = path + ".sha256"
        if let text = try? String(contentsOfFile: cachePath, encoding: .utf8) {
            let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
            if fields.count >= 3, fields[0].count == 64, Int(fields[1]) == size, Int(fields[2]) == mtime { return (String(fields[0]), true) }
        }
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw SafetensorsError(path: path, .io, "cannot open to hash it")
        }
        defer { try? handle.close() }
        var h = SHA256State()
        var done = 0
        while true {
            let chunk = handle.readData(ofLength: 8 << 20)
            if chunk.isEmpty { break }
            chunk.withUnsafeBytes { h.update($0.bindMemory(to: UInt8.self)) }
            done += chunk.count
            progress(done, size)
        }
        let hex = h.finish()
        try? "\(hex) \(size) \(mtime)\n".write(toFile: cachePath, atomically: true, encoding: .utf8)
        return (hex, false)
    }
}

/// The SHA-256 compression function over 64-byte blocks.
struct SHA256State {
    private var h: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) =
        (0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19)
    private var pending = [UInt8]()
    private var length: UInt64 = 0
    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    mutating func update(_ data: UnsafeBufferPointer<UInt8>) {
        length += UInt64(data.count)
        var i = 0
        if !pending.isEmpty {
            while i < data.count && pending.count < 64 { pending.append(data[i]); i += 1 }
            if pending.count == 64 { pending.withUnsafeBufferPointer { compress($0.baseAddress!) }; pending.removeAll(keepingCapacity: true) }
        }
        while i + 64 <= data.count { compress(data.baseAddress! + i); i += 64 }
        while i < data.count { pending.append(data[i]); i += 1 }
    }

    mutating func finish() -> String {
        let bits = length &* 8
        var tail = pending + [0x80]
        while tail.count % 64 != 56 { tail.append(0) }
        for s in stride(from: 56, through: 0, by: -8) { tail.append(UInt8(truncatingIfNeeded: bits >> UInt64(s))) }
        tail.withUnsafeBufferPointer { b in for o in stride(from: 0, to: b.count, by: 64) { compress(b.baseAddress! + o) } }
        return [h.0, h.1, h.2, h.3, h.4, h.5, h.6, h.7].map { String(format: "%08x", $0) }.joined()
    }

    private mutating func compress(_ block: UnsafePointer<UInt8>) {
        @inline(__always) func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
        // The message schedule on the stack: a heap array per 64-byte block would dominate.
        let (a, b, c, d, e, f, g, hh) = withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { w in
            for t in 0..<16 {
                w[t] = UInt32(block[4 * t]) << 24 | UInt32(block[4 * t + 1]) << 16 | UInt32(block[4 * t + 2]) << 8 | UInt32(block[4 * t + 3])
            }
            for t in 16..<64 {
                let s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
                let s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
                w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, hh) = h
            Self.k.withUnsafeBufferPointer { k in
                for t in 0..<64 {
                    let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
                    let ch = (e & f) ^ (~e & g)
                    let t1 = hh &+ s1 &+ ch &+ k[t] &+ w[t]
                    let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
                    let maj = (a & b) ^ (a & c) ^ (b & c)
                    let t2 = s0 &+ maj
                    hh = g; g = f; f = e; e = d &+ t1; d = c; c = b; b = a; a = t1 &+ t2
                }
            }
            return (a, b, c, d, e, f, g, hh)
        }
        h = (h.0 &+ a, h.1 &+ b, h.2 &+ c, h.3 &+ d, h.4 &+ e, h.5 &+ f, h.6 &+ g, h.7 &+ hh)
    }
}
