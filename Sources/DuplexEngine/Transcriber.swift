import DuplexCore
import Foundation

/// Kyutai STT as a frame processor: every 80 ms frame is encoded (all of Mimi's codebooks the
/// model reads), the LM takes one step, and the text token comes out, PAD and EPAD included (the
/// word timing needs them). Its extra heads give the end of the speaker's turn (semantic VAD:
/// head 2, class 0, above `endOfTurnThreshold`, as Kyutai's STT scripts read it), reported once
/// per turn through `endOfTurn`. Allocation-free per frame, like the Session it wraps.
public final class Transcriber: FrameProcessor {
    public let session: Session
    /// Probability above which the semantic VAD ends a turn (Kyutai's scripts use 0.5).
    public let endOfTurnThreshold: Float
    public private(set) var endOfTurn = false
    /// Words came since the last end of turn (the VAD only ends a turn that began).
    private var inTurn = false
    private let special: TextStreamSpecialIds

    public init(model: EngineModel, sampling: SamplingParameters = .greedy, endOfTurnThreshold: Float = 0.5) throws {
        let c = model.config
        guard c.kind == .stt || !c.speaks else {
            throw ModelError("\(model.name) is a \(c.kind.rawValue) model (it speaks): `duplex transcribe` runs Kyutai STT models "
                             + "(model_type \"stt\", dep_q 0), e.g. kyutai/stt-1b-en_fr or kyutai/stt-2.6b-en")
        }
        // run_inference's rule: the first frame is stepped twice so the silence prefix's first
        // frame is not swallowed by the initial tokens.
        session = model.makeSession(sampling: sampling, firstFrame: .runInference)
        self.endOfTurnThreshold = endOfTurnThreshold
        special = TextStreamSpecialIds(epad: c.textEndPaddingId, pad: c.textPaddingId, start: c.textCard)
    }

    public var frameSize: Int { session.frameSize }
    public var failure: Error? { session.failure }
    /// The model has a semantic VAD head (Kyutai's STT 1B has four extra heads; the 2.6B none).
    public var hasVoiceActivity: Bool { session.model.config.extraHeadsNumHeads > 2 }

    public func process(_ input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                        stamps: inout FrameTimestamps, clock: any FrameClock) -> Int32? {
        let before = session.frames
        _ = session.process(input, output: output, stamps: &stamps, clock: clock)
        endOfTurn = false
        guard session.frames > before, let token = session.lastTextToken else { return nil }
        if !special.contains(Int(token)) { inTurn = true }
        if inTurn, let p = session.extraHeadProbability(head: 2, index: 0), p > endOfTurnThreshold {
            endOfTurn = true
            inTurn = false
        }
        return token
    }
}

/// Text tokens → words with times, the way Kyutai STT's stream is laid out: a word's first
/// piece starts with "▁" (or follows a pad), its other pieces follow on the next frames, PAD
/// fills the frames between words. A word's start is the frame of its first piece; its end is
/// the start of the next word, or the end of the turn / input if none came. Times are in seconds
/// of the input audio: frame × 80 ms minus the silence prefix and the model's audio delay (the
/// text lags the audio by that much).
public struct WordAssembler: Sendable {
    public struct Word: Sendable, Equatable {
        public var text: String
        public var start: Double
        public var end: Double
    }

    public let tokenizer: SentencePieceTokenizer
    public let special: TextStreamSpecialIds
    public let frameSeconds: Double
    /// Seconds subtracted from frame times (silence prefix + audio delay).
    public let offsetSeconds: Double
    /// The word under way: its pieces' ids (decoded together, so byte-fallback pieces make their
    /// characters) and its start.
    private var pending: (ids: [Int], start: Double)?
    private var lastWasPiece = false

    public init(tokenizer: SentencePieceTokenizer, config: LMConfig, frameSeconds: Double = 0.08) {
        self.tokenizer = tokenizer
        special = TextStreamSpecialIds(epad: config.textEndPaddingId, pad: config.textPaddingId, start: config.textCard)
        self.frameSeconds = frameSeconds
        offsetSeconds = config.sttSilencePrefixSeconds + config.sttAudioDelaySeconds
    }

    public func time(ofFrame frame: Int) -> Double { max(0, Double(frame) * frameSeconds - offsetSeconds) }

    /// Feeds the token of `frame`; returns the word it completed, if any.
    public mutating func push(_ token: Int32, frame: Int) -> Word? {
        let id = Int(token)
        guard !special.contains(id), let piece = tokenizer.piece(id) else {
            lastWasPiece = false
            return nil
        }
        let startsWord = piece.hasPrefix("▁") || !lastWasPiece || pending == nil
        lastWasPiece = true
        guard startsWord else {
            pending?.ids.append(id)
            return nil
        }
        let now = time(ofFrame: frame)
        let finished = pending.flatMap { word(ids: $0.ids, start: $0.start, end: now) }
        pending = ([id], now)
        return finished
    }

    /// Ends the word under way at `frame` (end of turn or of input).
    public mutating func flush(frame: Int) -> Word? {
        defer { pending = nil; lastWasPiece = false }
        return pending.flatMap { word(ids: $0.ids, start: $0.start, end: max($0.start, time(ofFrame: frame))) }
    }

    /// A lone "▁" piece starts a word whose letters come next; a word of nothing is no word.
    private func word(ids: [Int], start: Double, end: Double) -> Word? {
        let text = ((try? tokenizer.decode(ids)) ?? ids.compactMap { tokenizer.piece($0) }.joined())
            .replacingOccurrences(of: "▁", with: " ").trimmingCharacters(in: .whitespaces)
        return text.isEmpty ? nil : Word(text: text, start: start, end: end)
    }
}

/// A source with silence around it: `prefix` samples before, `suffix` after (Kyutai STT's
/// run_inference pads the audio with the silence prefix in front and audio delay + 1 s behind,
/// so the model hears a clean start and the last words come out).
public final class PaddedSource: FrameSource {
    private let inner: FrameSource
    private var prefixLeft: Int
    private var suffixLeft: Int
    private var innerEnded = false

    public init(_ inner: FrameSource, prefix: Int, suffix: Int) {
        self.inner = inner
        prefixLeft = prefix
        suffixLeft = suffix
    }

    public var pacing: SourcePacing { inner.pacing }
    public func cancel() { inner.cancel() }

    public func read(into buffer: UnsafeMutablePointer<Float>, count: Int) throws -> Bool {
        var filled = 0
        if prefixLeft > 0 {
            let n = min(prefixLeft, count)
            buffer.update(repeating: 0, count: n)
            prefixLeft -= n
            filled = n
        }
        if filled < count && !innerEnded {
            if try inner.read(into: buffer + filled, count: count - filled) { return true }
            innerEnded = true
        }
        guard filled > 0 || suffixLeft > 0 else { return false }
        // The tail: silence (the rest of this read past the end of the input counts toward it).
        let n = count - filled
        (buffer + filled).update(repeating: 0, count: n)
        suffixLeft = max(0, suffixLeft - n)
        return true
    }
}
