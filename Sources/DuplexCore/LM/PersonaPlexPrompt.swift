import Foundation

/// PersonaPlex's system prompts (NVIDIA's lm.py `step_system_prompts`, run by its server before
/// the conversation): the voice prompt, 6 frames of silence, the role text one token per frame,
/// 6 frames of silence. Every prompt frame forces all 17 streams (text, Moshi's 8 codebooks, the
/// user's 8); what the model generates meanwhile is discarded, and the conversation continues
/// from the same delay ring, offset and KV cache.
///
/// | phase | text | Moshi's codebooks | the user's |
/// |---|---|---|---|
/// | voice | PAD | the prompt audio's Mimi codes, frame by frame | sine |
/// | silence | PAD | silence | sine |
/// | text | the prompt's token | silence | sine |
///
/// NVIDIA's LMGen runs one call behind Kyutai's (its call 0 steps nothing), so its answer comes
/// 80 ms later; the ring columns and transformer steps are the same. Frame 0 of the prompt is the
/// initial tokens on every stream, whatever was given (both LMGens overwrite it), so the voice's
/// first Mimi frame never reaches the model. In duplex's call o the streams' next column (o + 1)
/// is forced where it still holds a prompt frame: at the last prompt call the text and the
/// undelayed codebook are the model's own (the conversation's first frame), the delayed ones
/// still the prompt's silence.
public struct PersonaPlexPrompt: Sendable {
    /// Mimi's codes of silence and of a sine tone, which NVIDIA's prompts put on Moshi's and the
    /// user's streams (lm.py `SILENCE_TOKENS`, `SINE_TOKENS`).
    public static let silenceTokens: [Int32] = [948, 243, 1178, 546, 1736, 1030, 1978, 2008]
    public static let sineTokens: [Int32] = [430, 1268, 381, 1611, 1095, 1495, 56, 472]
    /// server.py: `int(0.5 × frame rate)` frames of silence after each prompt.
    public static let silenceFrames = 6

    public enum Voice: Sendable {
        /// The prompt audio's Mimi codes, [frames][8] (from a .wav: loudness-normalised and encoded).
        case codes([[Int32]])
        /// A `voices/*.pt` file: the temporal inputs NVIDIA's code saved for every frame but the
        /// last, and its delay ring after the prompt (which holds the last frames' codes).
        case embeddings(TorchVoiceFile)
    }

    /// Every prompt frame's values: text, then nQ audio streams [frames][1 + nQ].
    public let frames: [[Int32]]
    /// Calls whose temporal input is a stored embedding (the .pt voice), each [dim].
    public let embeddings: [[Float]]

    public var frameCount: Int { frames.count }

    /// `textTokens`: the role prompt, already tokenized (`wrapWithSystemTags`, then SentencePiece).
    /// `silence`/`sine`: default NVIDIA's codes, taken modulo a smaller audio vocabulary (the
    /// shrunk models of tests, as the reference fixture's NVIDIA run patched them).
    public init(voice: Voice?, textTokens: [Int], config c: LMConfig, silence: [Int32]? = nil, sine: [Int32]? = nil,
                silenceFrames: Int = silenceFrames) throws {
        let silence = silence ?? Self.silenceTokens.map { $0 % Int32(c.card) }
        let sine = sine ?? Self.sineTokens.map { $0 % Int32(c.card) }
        guard c.kind == .personaplex else {
            throw PersonaPlexPromptError("voice and text prompts are PersonaPlex's (model_type \"personaplex\"); this is a \(c.kind.rawValue) model")
        }
        let g = c.generatedStreams
        guard silence.count == g, sine.count == c.userStreams else {
            throw PersonaPlexPromptError("silence and sine frames need \(g) and \(c.userStreams) codes")
        }
        let pad = Int32(c.textPaddingId)
        func frame(text: Int32, moshi: [Int32]) -> [Int32] { [text] + moshi + sine }
        var frames: [[Int32]] = []
        var embeddings: [[Float]] = []
        switch voice {
        case .codes(let codes)?:
            for (f, moshi) in codes.enumerated() {
                guard moshi.count >= g else { throw PersonaPlexPromptError("voice prompt frame \(f) has \(moshi.count) codes, expected \(g)") }
                frames.append(frame(text: pad, moshi: Array(moshi.prefix(g))))
            }
        case .embeddings(let file)?:
            guard file.width == c.dim else {
                throw PersonaPlexPromptError("\(file.path): voice embeddings are \(file.width) wide; this model's input is \(c.dim)")
            }
            guard file.streams == c.numStreams, file.cacheColumns >= c.maxDelay + 2 else {
                throw PersonaPlexPromptError("\(file.path): its delay ring is \(file.cacheShape); this model needs [1, \(c.numStreams), ≥ \(c.maxDelay + 2)]")
            }
            // The voice's frames are replayed as inputs for calls 0 …< T; frames T − 1 and T are
            // read back from the ring: stream s of frame f sits in column f + delay(s), at slot
            // column mod width. Older frames are never read as tokens (their inputs are stored).
            let t = file.frames
            let width = file.cacheColumns
            for f in 0...t {
                var values = [Int32](repeating: 0, count: c.numStreams)
                for s in 0..<c.numStreams {
                    let column = f + c.delays[s]
                    let stored = file.cache(stream: s, slot: column % width)
                    let readable = column == t || (column == t + 1 && c.delays[s] > 0)
                    values[s] = readable ? Int32(clamping: stored) : (s == 0 ? pad : Int32(c.card))
                }
                frames.append(values)
            }
            embeddings = (0..<t).map { Array(file.embedding($0)) }
        case nil:
            break
        }
        let silent = frame(text: pad, moshi: silence)
        frames += Array(repeating: silent, count: silenceFrames)
        for (i, token) in textTokens.enumerated() {
            guard (0..<c.textCard).contains(token) else { throw PersonaPlexPromptError("text prompt token \(i) (\(token)) is outside 0..<\(c.textCard)") }
            frames.append(frame(text: Int32(token), moshi: silence))
        }
        frames += Array(repeating: silent, count: silenceFrames)
        for (f, values) in frames.enumerated() {
            for s in 0..<c.numStreams where values[s] < 0 || Int(values[s]) > (s == 0 ? c.textCard : c.card) {
                throw PersonaPlexPromptError("prompt frame \(f), stream \(s): token \(values[s]) is out of range")
            }
        }
        self.frames = frames
        self.embeddings = embeddings
        textTokenCount = textTokens.count
    }

    /// Text prompt tokens (for messages).
    public let textTokenCount: Int

    /// A prompt the attention window cannot hold would be partly forgotten before the
    /// conversation starts (NVIDIA's code runs it anyway): refused for the text prompt, which is
    /// what a user sizes.
    public func checkFitsContext(_ c: LMConfig) throws {
        guard frames.count < c.context else {
            throw PersonaPlexPromptError("the prompts take \(frames.count) frames (text \(textTokenCount) tokens); the model attends to "
                + "\(c.context) frames, so the start would be forgotten before the conversation begins: shorten the text prompt")
        }
    }

    /// NVIDIA's server.py `wrap_with_system_tags`: the role text between `<system>` tags (kept as
    /// is when already wrapped), surrounding whitespace dropped.
    public static func wrapWithSystemTags(_ text: String) -> String {
        let cleaned = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if cleaned.hasPrefix("<system>") && cleaned.hasSuffix("<system>") && cleaned.count >= 2 * "<system>".count { return cleaned }
        return "<system> \(cleaned) <system>"
    }

    /// Runs the prompt from a fresh state: `frameCount` calls, their outputs discarded.
    public func run(_ gen: LMGen, state: inout LMGen.State) throws {
        for call in 0..<frames.count { try step(call: call, gen: gen, state: &state) }
    }

    /// The prompt's call `call` (0 ..< frameCount), for callers that watch each step.
    public func step(call o: Int, gen: LMGen, state: inout LMGen.State) throws {
        let c = gen.config
        let g = c.generatedStreams
        let p = frames.count
        precondition(o >= 0 && o < p, "prompt call out of range")
        var column = [Int32](repeating: -1, count: 1 + g)
        for s in 0...g {
            let f = o + 1 - c.delays[s]
            column[s] = f < p ? frames[f][s] : -1
        }
        let user = Array(frames[o][(1 + g)...])
        try user.withUnsafeBufferPointer { userCodes in
            try column.withUnsafeBufferPointer { forced in
                if o < embeddings.count {
                    try embeddings[o].withUnsafeBufferPointer { e in
                        _ = try gen.step(userCodes: userCodes, state: &state, forcing: .init(column: forced, embedding: e.baseAddress!))
                    }
                } else {
                    _ = try gen.step(userCodes: userCodes, state: &state, forcing: .init(column: forced))
                }
            }
        }
    }
}

public struct PersonaPlexPromptError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
