import ArgumentParser
import DuplexAudio
import DuplexCore
import DuplexEngine
import Foundation

/// Offline file mode, like Kyutai's `run_inference`: the whole input goes through the same Session
/// and pipeline a live conversation uses, one 80 ms frame at a time, so it answers exactly as
/// `pipe` does for the same input and seed (the output as long as the input). `--first-frame
/// run-inference` feeds the first frame to the LM twice, as run_inference does.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a recording (or user codes) through Moshi offline, frame by frame.",
        discussion: """
            Audio: --input IN.wav --output OUT.wav [--text OUT.txt].
            Tokens (no codec needed): --input-codes user.npy (int32 [U, frames], the user's Mimi codes) and
            --output-codes out.npy (int32 [1 + G, frames]: the text token, then the model's own audio codes).
            U and G per model: Moshi 8 and 8, PersonaPlex 8 and 8, Hibiki 8 and 8, Kyutai STT 32 and 0 (text only).
            Hibiki with audio input: after the input, one end-of-stream frame and then silence until the model
            says its text EOS (Kyutai's run_inference), so the translation finishes; --max-tail-frames caps it.
            --model is a folder laid out like Kyutai's HF repos (see `duplex generate --help` and README).
            """)

    @OptionGroup var modelOption: ModelOption
    var model: String { modelOption.path }

    @Option(help: "User audio (WAV, 24 kHz mono).")
    var input: String?

    @Option(help: "Moshi's audio (WAV, 24 kHz mono).")
    var output: String?

    @Option(help: "Moshi's text (the transcript of what it said).")
    var text: String?

    @Option(name: .customLong("input-codes"), help: "User codes instead of audio: .npy int32 [U, frames], U = the model's user codebooks (extra ones ignored).")
    var inputCodes: String?

    @Option(name: .customLong("output-codes"), help: "Write what the model produced: .npy int32 [1 + G, frames] (text, then its G audio codes).")
    var outputCodes: String?

    @Option(help: "Stop after this many input frames.")
    var maxFrames: Int?

    @Option(name: .customLong("max-tail-frames"), help: "Hibiki: at most this many silent frames after the input while waiting for its EOS (default 250 = 20 s).")
    var maxTailFrames = 250

    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var persona: PersonaOptions
    @OptionGroup var runtime: LMRuntimeOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        guard (input == nil) != (inputCodes == nil) else {
            throw ValidationError("give exactly one input: --input IN.wav or --input-codes FILE.npy")
        }
        guard output != nil || text != nil || outputCodes != nil else {
            throw ValidationError("nothing to write: give --output OUT.wav, --text OUT.txt and/or --output-codes FILE.npy")
        }
        if let maxFrames, maxFrames < 1 { throw ValidationError("--max-frames must be at least 1") }
        if maxTailFrames < 0 { throw ValidationError("--max-tail-frames must be ≥ 0") }
    }

    func run() throws {
        compute.apply()
        let folder = try ModelFolder(model)
        for note in folder.notes { warn("note: \(note)") }
        try sampling.check(folder.config, listening: input == nil && output == nil)
        try persona.check(folder.config)
        // Check every file the run will need before the long part starts.
        let audioIn = try input.map { try CodecAudio.read($0, raw: false, sampleRate: 24_000) }
        if let audioIn, audioIn.isEmpty { throw CLIError("\(input!): no audio") }
        let userCodes = audioIn == nil ? try readUserCodes(folder.config) : nil
        // A WAV voice prompt is encoded by the codec, a role text by the tokenizer.
        let wavVoice = persona.voicePrompt.map { !$0.lowercased().hasSuffix(".pt") } ?? false
        let engine = try EngineModel.load(folder: folder, codec: input != nil || output != nil || wavVoice,
                                          tokenizer: text != nil || persona.textPrompt != nil, kvCache: runtime.resolvedKVCache)
        // The same Session every other use runs, so generate answers as pipe, talk and serve do.
        let session = try sampling.session(engine, listening: input == nil && output == nil, prompt: persona.prompt(for: engine))
        var produced: [[Int32]] = []
        session.onTokens = { produced.append(Array($0)) }
        let progress = FrameProgress()
        var audioOut: [Float] = []
        if let audioIn {
            let frames = min((audioIn.count + engine.frameSize - 1) / engine.frameSize, maxFrames ?? Int.max)
            let samples = Array(audioIn.prefix(frames * engine.frameSize))
            let sink = CollectingSink(reservingCapacity: frames * engine.frameSize)
            do {
                _ = try FrameLoop.runInline(processor: session, source: SignalSource(samples), sink: sink) { _ in progress.tick() }
            } catch {
                throw CLIError("\(error)")
            }
            audioOut = Array(sink.samples.prefix(samples.count))
            if engine.config.kind == .hibiki {
                audioOut += try finishTranslation(session, engine: engine, progress: progress)
            }
        } else if let userCodes {
            let frames = min(userCodes.frames, maxFrames ?? Int.max)
            var frame = [Float](repeating: 0, count: engine.frameSize)
            for t in 0..<frames {
                let codes = userCodes.frame(t, count: engine.config.userStreams)
                if output != nil {
                    _ = try frame.withUnsafeMutableBufferPointer { try session.step(userCodes: codes, output: $0.baseAddress!) }
                    audioOut.append(contentsOf: frame)
                } else {
                    _ = try session.step(userCodes: codes)
                }
                progress.tick()
            }
        }
        progress.finish(produced: produced.count)
        let depQ = folder.config.generatedStreams
        if let outputCodes {
            try NPY.writeInt32(outputCodes, NPY.Array(shape: [1 + depQ, produced.count],
                                                      int32: transposed(produced, rows: 1 + depQ)))
        }
        if let output {
            try WAV(sampleRate: 24_000, channels: 1, samples: audioOut).write(to: output)
            warn(String(format: "wrote %@ (%.2f s)", output, Double(audioOut.count) / 24_000))
        }
        if let text, let tokenizer = engine.tokenizer {
            let c = folder.config
            let special = TextStreamSpecialIds(epad: c.textEndPaddingId, pad: c.textPaddingId, start: c.textCard)
            let transcript = try tokenizer.transcript(produced.map { Int($0[0]) }, special: special)
            do { try (transcript + "\n").write(toFile: text, atomically: true, encoding: .utf8) } catch {
                throw CLIError("cannot write \(text): \(error.localizedDescription)")
            }
        }
    }

    /// Hibiki's end of stream (Kyutai's run_inference): one frame of code `card` on every user
    /// codebook, then silence through the codec, until the model emits its text EOS — the
    /// translation lags the speech, so it would otherwise be cut off.
    private func finishTranslation(_ session: Session, engine: EngineModel, progress: FrameProgress) throws -> [Float] {
        let c = engine.config
        let eos = Int32(engine.tokenizer?.eosId ?? 2)
        var out: [Float] = []
        var frame = [Float](repeating: 0, count: engine.frameSize)
        let silence = [Float](repeating: 0, count: engine.frameSize)
        let end = [Int32](repeating: Int32(c.card), count: c.userStreams)
        _ = try frame.withUnsafeMutableBufferPointer { try session.step(userCodes: end, output: $0.baseAddress!) }
        out += frame
        progress.tick()
        var stamps = FrameTimestamps()
        let clock = MonotonicClock()
        for _ in 0..<maxTailFrames where session.lastTextToken != eos {
            frame.withUnsafeMutableBufferPointer { o in
                silence.withUnsafeBufferPointer { _ = session.process($0.baseAddress!, output: o.baseAddress!, stamps: &stamps, clock: clock) }
            }
            if let failure = session.failure { throw CLIError("\(failure)") }
            out += frame
            progress.tick()
        }
        if session.lastTextToken != eos {
            warn("note: Hibiki had not said its end of stream after \(maxTailFrames) silent frames; stopped there (--max-tail-frames)")
        }
        return out
    }

    struct UserCodes {
        let frames: Int
        let codebooks: Int
        let values: [Int32]   // [codebooks, frames]
        func frame(_ t: Int, count: Int) -> [Int32] { (0..<count).map { values[$0 * frames + t] } }
    }

    private func readUserCodes(_ config: LMConfig) throws -> UserCodes {
        guard let inputCodes else { throw CLIError("no input") }
        let array = try NPY.readInt32(inputCodes)
        guard array.shape.count == 2 else {
            throw CLIError("\(inputCodes): expected a 2-D array [codebooks, frames], got shape \(array.shape)")
        }
        let (k, t) = (array.shape[0], array.shape[1])
        guard k >= config.userStreams else {
            throw CLIError("\(inputCodes): \(k) codebooks, the model needs \(config.userStreams) (shape [\(config.userStreams), frames])")
        }
        guard t >= 1 else { throw CLIError("\(inputCodes): no frames") }
        // Only the codebooks the model reads are checked (extra ones are ignored, as Kyutai does).
        if let bad = array.int32.prefix(config.userStreams * t).firstIndex(where: { $0 < -1 || Int($0) > config.card }) {
            throw CLIError("\(inputCodes): code \(array.int32[bad]) at codebook \(bad / t), frame \(bad % t) is outside −1…\(config.card)")
        }
        return UserCodes(frames: t, codebooks: k, values: array.int32)
    }

    /// A progress line every 2 s on stderr, and the figures at the end.
    final class FrameProgress {
        private let clock = MonotonicClock()
        private let start: UInt64
        private var last: UInt64
        private var frames = 0
        init() { start = clock.now(); last = start }
        func tick() {
            frames += 1
            let now = clock.now()
            guard now - last > 2_000_000_000 else { return }
            last = now
            warn(String(format: "frame %d, %.1f ms/frame", frames, Double(now - start) / 1e6 / Double(frames)))
        }
        func finish(produced: Int) {
            let seconds = Double(clock.now() - start) / 1e9
            warn(String(format: "generated %d frames (%.1f s of audio) in %.1f s: %.1f ms/frame, real-time factor %.2f",
                        produced, Double(produced) * 0.08, seconds, seconds * 1000 / Double(max(1, frames)),
                        seconds / max(1e-9, Double(frames) * 0.08)))
        }
    }

    private func transposed(_ frames: [[Int32]], rows: Int) -> [Int32] {
        var out = [Int32](repeating: 0, count: rows * frames.count)
        for (t, f) in frames.enumerated() { for r in 0..<rows { out[r * frames.count + t] = f[r] } }
        return out
    }
}
