import ArgumentParser
import DuplexAudio
import DuplexCore
import DuplexEngine
import Foundation

/// Offline file mode, like Kyutai's `run_inference`: the whole input goes through the same
/// streaming step a live conversation uses, one 80 ms frame at a time. As run_inference does, the
/// first frame is fed twice so it is not swallowed by the initial tokens of call 0: n input frames
/// give n output frames.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a recording (or user codes) through Moshi offline, frame by frame.",
        discussion: """
            Audio: --input IN.wav --output OUT.wav [--text OUT.txt].
            Tokens (no codec needed): --input-codes user.npy (int32 [8, frames], the user's Mimi codes)
            and --output-codes out.npy (int32 [9, frames]: Moshi's text token, then its 8 audio codes).
            --model is a folder laid out like Kyutai's HF repos (see `duplex generate --help` and README).
            """)

    @OptionGroup var modelOption: ModelOption
    var model: String { modelOption.model }

    @Option(help: "User audio (WAV, 24 kHz mono).")
    var input: String?

    @Option(help: "Moshi's audio (WAV, 24 kHz mono).")
    var output: String?

    @Option(help: "Moshi's text (the transcript of what it said).")
    var text: String?

    @Option(name: .customLong("input-codes"), help: "User codes instead of audio: .npy int32 [8, frames] (extra codebooks ignored).")
    var inputCodes: String?

    @Option(name: .customLong("output-codes"), help: "Write what the model produced: .npy int32 [9, frames] (text, then 8 audio codes).")
    var outputCodes: String?

    @Option(help: "Stop after this many input frames.")
    var maxFrames: Int?

    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        guard (input == nil) != (inputCodes == nil) else {
            throw ValidationError("give exactly one input: --input IN.wav or --input-codes FILE.npy")
        }
        guard output != nil || text != nil || outputCodes != nil else {
            throw ValidationError("nothing to write: give --output OUT.wav, --text OUT.txt and/or --output-codes FILE.npy")
        }
        if let maxFrames, maxFrames < 1 { throw ValidationError("--max-frames must be at least 1") }
    }

    func run() throws {
        compute.apply()
        let folder = try ModelFolder(model)
        for note in folder.notes { warn("note: \(note)") }
        // Check every file the run will need before the long part starts.
        let mimi = (input != nil || output != nil) ? try folder.loadMimi() : nil
        let tokenizer = text != nil ? try folder.loadTokenizer() : nil
        let user: UserCodes
        if let input, let mimi {
            let audio = try CodecAudio.read(input, raw: false, sampleRate: mimi.config.sampleRate)
            let codes = mimi.encode(audio)
            guard codes.frames > 0 else { throw ValidationError("\(input): no audio") }
            user = UserCodes(frames: codes.frames, codebooks: codes.codebooks, values: codes.values)
            warn(String(format: "encoded %@: %d frames (%.2f s)", input, codes.frames, Double(codes.frames) * 0.08))
        } else {
            user = try readUserCodes(folder.config)
        }
        let lm = try folder.loadLM()
        let gen = LMGen(model: lm, sampling: sampling.parameters(for: folder.config))
        let frames = min(user.frames, maxFrames ?? Int.max)
        let produced = try run(gen, user: user, frames: frames)
        let depQ = folder.config.depQ
        if let outputCodes {
            try NPY.writeInt32(outputCodes, NPY.Array(shape: [1 + depQ, produced.count],
                                                      int32: transposed(produced, rows: 1 + depQ)))
        }
        if let output, let mimi {
            var values = [Int32](repeating: 0, count: depQ * produced.count)
            for (t, f) in produced.enumerated() { for k in 0..<depQ { values[k * produced.count + t] = f[1 + k] } }
            let audio = try mimi.decode(MimiCodes(codebooks: depQ, frames: produced.count, values: values))
            try WAV(sampleRate: mimi.config.sampleRate, channels: 1, samples: audio).write(to: output)
            warn(String(format: "wrote %@ (%.2f s)", output, Double(audio.count) / Double(mimi.config.sampleRate)))
        }
        if let text, let tokenizer {
            let c = folder.config
            let special = TextStreamSpecialIds(epad: c.textEndPaddingId, pad: c.textPaddingId, start: c.textCard)
            let transcript = try tokenizer.transcript(produced.map { Int($0[0]) }, special: special)
            do { try (transcript + "\n").write(toFile: text, atomically: true, encoding: .utf8) } catch {
                throw ValidationError("cannot write \(text): \(error.localizedDescription)")
            }
        }
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

    /// The streaming loop: each produced frame as [1 + depQ] tokens.
    private func run(_ gen: LMGen, user: UserCodes, frames: Int) throws -> [[Int32]] {
        var state = gen.makeState()
        let streams = gen.config.userStreams
        var produced: [[Int32]] = []
        produced.reserveCapacity(frames)
        let start = DispatchTime.now().uptimeNanoseconds
        var lastReport = start
        for t in 0..<frames {
            let codes = user.frame(t, count: streams)
            if t == 0 { _ = try gen.step(userCodes: codes, state: &state) }   // run_inference's first-frame rule
            if let frame = try gen.step(userCodes: codes, state: &state) { produced.append(frame) }
            let now = DispatchTime.now().uptimeNanoseconds
            if now - lastReport > 2_000_000_000 {
                lastReport = now
                let ms = Double(now - start) / 1e6 / Double(t + 1)
                warn(String(format: "frame %d/%d, %.1f ms/frame", t + 1, frames, ms))
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        warn(String(format: "generated %d frames (%.1f s of audio) in %.1f s: %.1f ms/frame, real-time factor %.2f",
                    produced.count, Double(produced.count) * 0.08, seconds, seconds * 1000 / Double(max(1, frames + 1)),
                    seconds / max(1e-9, Double(frames) * 0.08)))
        return produced
    }

    private func transposed(_ frames: [[Int32]], rows: Int) -> [Int32] {
        var out = [Int32](repeating: 0, count: rows * frames.count)
        for (t, f) in frames.enumerated() { for r in 0..<rows { out[r * frames.count + t] = f[r] } }
        return out
    }
}
