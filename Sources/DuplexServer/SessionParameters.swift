import DuplexEngine
import Foundation

/// What a client may choose per conversation: the sampling settings Kyutai's web client sends as
/// query parameters (moshi-spec.md §3.8, §6.4). `nil` means "the model's default" — the server's
/// command-line defaults, else the engine's (LMGen: text 0.7/25, audio 0.8/250).
public struct SessionParameters: Sendable, Equatable {
    public var textTemperature: Float?
    public var textTopK: Int?
    public var audioTemperature: Float?
    public var audioTopK: Int?
    /// Added to the PAD token's log-probability before sampling (Rust backend's `pad_mult`).
    public var padMult: Float?
    public var textSeed: UInt64?
    public var audioSeed: UInt64?
    public var repetitionPenaltyContext: Int?
    public var repetitionPenalty: Float?
    /// PersonaPlex's persona (NVIDIA's server query parameters): a voice file name in the server's
    /// voice directory, and the role text.
    public var voicePrompt: String?
    public var textPrompt: String?

    public init(textTemperature: Float? = nil, textTopK: Int? = nil, audioTemperature: Float? = nil,
                audioTopK: Int? = nil, padMult: Float? = nil, textSeed: UInt64? = nil, audioSeed: UInt64? = nil,
                repetitionPenaltyContext: Int? = nil, repetitionPenalty: Float? = nil, voicePrompt: String? = nil,
                textPrompt: String? = nil) {
        self.textTemperature = textTemperature
        self.textTopK = textTopK
        self.audioTemperature = audioTemperature
        self.audioTopK = audioTopK
        self.padMult = padMult
        self.textSeed = textSeed
        self.audioSeed = audioSeed
        self.repetitionPenaltyContext = repetitionPenaltyContext
        self.repetitionPenalty = repetitionPenalty
        self.voicePrompt = voicePrompt
        self.textPrompt = textPrompt
    }

    /// Fills every value this one leaves open from `defaults` (a client's choice wins over the server's).
    public func merged(over defaults: SessionParameters) -> SessionParameters {
        SessionParameters(
            textTemperature: textTemperature ?? defaults.textTemperature,
            textTopK: textTopK ?? defaults.textTopK,
            audioTemperature: audioTemperature ?? defaults.audioTemperature,
            audioTopK: audioTopK ?? defaults.audioTopK,
            padMult: padMult ?? defaults.padMult,
            textSeed: textSeed ?? defaults.textSeed,
            audioSeed: audioSeed ?? defaults.audioSeed,
            repetitionPenaltyContext: repetitionPenaltyContext ?? defaults.repetitionPenaltyContext,
            repetitionPenalty: repetitionPenalty ?? defaults.repetitionPenalty,
            voicePrompt: voicePrompt ?? defaults.voicePrompt,
            textPrompt: textPrompt ?? defaults.textPrompt)
    }

    /// The query parameter names, as Kyutai's web client spells them.
    public static let queryNames = [
        "text_temperature", "text_topk", "audio_temperature", "audio_topk", "pad_mult",
        "text_seed", "audio_seed", "repetition_penalty_context", "repetition_penalty", "voice_prompt", "text_prompt",
    ]

    /// Reads the sampling parameters from a query's name/value pairs. Names this server does not
    /// use (`email`, `image_url`, `worker_auth_id`, …) are ignored; a value that is out of range or
    /// not a number is an error naming the parameter, so a typo never silently changes nothing.
    public init(query: [(name: String, value: String)]) throws(ChatProtocolError) {
        self.init()
        for (name, raw) in query {
            let value = raw.trimmingCharacters(in: .whitespaces)
            func float(_ range: ClosedRange<Float>) throws(ChatProtocolError) -> Float {
                guard let v = Float(value), v.isFinite, range.contains(v) else {
                    throw ChatProtocolError("query parameter \(name)=\(raw): expected a number in \(range.lowerBound)…\(range.upperBound)")
                }
                return v
            }
            func int(_ range: ClosedRange<Int>) throws(ChatProtocolError) -> Int {
                // The web client formats every value as a JS number; "25.0" is an integer too.
                if let v = Int(value), range.contains(v) { return v }
                if let d = Double(value), d.rounded() == d, let v = Int(exactly: d), range.contains(v) { return v }
                throw ChatProtocolError("query parameter \(name)=\(raw): expected an integer in \(range.lowerBound)…\(range.upperBound)")
            }
            func seed() throws(ChatProtocolError) -> UInt64 {
                if let v = UInt64(value) { return v }
                if let v = Int64(value) { return UInt64(bitPattern: v) }
                throw ChatProtocolError("query parameter \(name)=\(raw): expected an integer seed")
            }
            switch name {
            case "text_temperature": textTemperature = try float(0...100)
            case "text_topk": textTopK = try int(0...1_000_000)
            case "audio_temperature": audioTemperature = try float(0...100)
            case "audio_topk": audioTopK = try int(0...1_000_000)
            case "pad_mult": padMult = try float(-1000...1000)
            case "text_seed": textSeed = try seed()
            case "audio_seed": audioSeed = try seed()
            case "repetition_penalty_context": repetitionPenaltyContext = try int(0...100_000)
            case "repetition_penalty": repetitionPenalty = try float(0...100)
            case "voice_prompt":
                guard !value.isEmpty, value.utf8.count <= 255, !value.contains("/"), value != ".", value != ".." else {
                    throw ChatProtocolError("query parameter voice_prompt=\(raw): expected a file name in the server's voice directory")
                }
                voicePrompt = value
            case "text_prompt":
                guard raw.utf8.count <= 16_384 else { throw ChatProtocolError("query parameter text_prompt: longer than 16 KiB") }
                textPrompt = raw
            default: continue
            }
        }
    }
}

/// Creates one conversation's `FrameProcessor` (the real `Session`: per-connection state over the
/// shared read-only model). Called on that session's own worker queue, never on an event loop, so
/// it may take a while (allocating caches); an error it throws is sent to the client as kind 5.
public typealias SessionFactory = @Sendable (SessionParameters) throws -> any FrameProcessor

/// Turns a text token id into what the client shows (`nil`: nothing to show, e.g. PAD/EPAD).
public typealias TokenText = @Sendable (Int32) -> String?

/// What the server needs of a model: how to start a conversation and how to show its text.
/// The server knows nothing else about the model.
public struct ChatModel: Sendable {
    public var makeSession: SessionFactory
    public var tokenText: TokenText
    /// Sent as a kind-4 JSON message before the handshake, when set (as Kyutai's Rust backend does).
    public var metadataJSON: String?
    /// Samples per frame in and out (1920 = 80 ms at 24 kHz for Mimi).
    public var frameSize: Int
    public var sampleRate: Int

    public init(frameSize: Int = 1920, sampleRate: Int = 24_000, metadataJSON: String? = nil,
                makeSession: @escaping SessionFactory, tokenText: @escaping TokenText) {
        self.frameSize = frameSize
        self.sampleRate = sampleRate
        self.metadataJSON = metadataJSON
        self.makeSession = makeSession
        self.tokenText = tokenText
    }
}
