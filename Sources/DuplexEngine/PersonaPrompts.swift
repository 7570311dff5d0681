import DuplexAudio
import DuplexCore
import Foundation
import Synchronization

/// PersonaPlex's persona for a session: a voice prompt (a WAV recording, or one of NVIDIA's
/// `voices/*.pt` files) and a role text, made into the prompt the session replays before the
/// conversation (`PersonaPlexPrompt`). Voices are read once and kept (the server serves many
/// sessions from a few voices); making a prompt is not on the real-time path.
public final class PersonaPrompts: Sendable {
    public let engine: EngineModel
    /// Where the server's `voice_prompt` query names a file (NVIDIA's `--voice-prompt-dir`).
    public let voiceDirectory: String?
    private let voices = Mutex<[String: PersonaPlexPrompt.Voice]>([:])

    public init(engine: EngineModel, voiceDirectory: String? = nil) throws {
        guard engine.config.kind == .personaplex else {
            throw ModelError("--voice-prompt and --text-prompt are PersonaPlex's (nvidia/personaplex-7b-v1); \(engine.name) is a "
                             + "\(engine.config.kind.rawValue) model")
        }
        self.engine = engine
        self.voiceDirectory = voiceDirectory
    }

    /// The prompt for a voice file (a path, or with `fromDirectory` a name in `voiceDirectory`)
    /// and a role text; either may be absent (NVIDIA's prompts then keep only their silences).
    public func prompt(voice: String?, text: String?, fromDirectory: Bool = false) throws -> PersonaPlexPrompt {
        var resolved: PersonaPlexPrompt.Voice?
        if let voice {
            let path: String
            if fromDirectory {
                // A client names a voice; it never reaches outside the directory.
                guard let voiceDirectory else { throw ModelError("voice_prompt \(voice): this server has no --voice-prompt-dir") }
                guard !voice.isEmpty, !voice.contains("/"), voice != "..", voice != "." else {
                    throw ModelError("voice_prompt \"\(voice)\" is not a file name in the server's voice directory")
                }
                path = (voiceDirectory as NSString).appendingPathComponent(voice)
            } else {
                path = voice
            }
            resolved = try load(path)
        }
        var tokens: [Int] = []
        if let text, !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            guard let tokenizer = engine.tokenizer else {
                throw ModelError("--text-prompt needs the model's tokenizer (\(engine.config.tokenizerName)) in \(engine.name)")
            }
            tokens = tokenizer.encode(PersonaPlexPrompt.wrapWithSystemTags(text))
        }
        let prompt = try wrap { try PersonaPlexPrompt(voice: resolved, textTokens: tokens, config: engine.config) }
        try wrap { try prompt.checkFitsContext(engine.config) }
        return prompt
    }

    private func wrap<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as PersonaPlexPromptError { throw ModelError(error.description) }
    }

    private func load(_ path: String) throws -> PersonaPlexPrompt.Voice {
        if let known = voices.withLock({ $0[path] }) { return known }
        let voice = try Self.readVoice(path, engine: engine)
        voices.withLock { $0[path] = voice }
        return voice
    }

    /// A voice prompt file: `.pt` (NVIDIA's saved embeddings) or audio (WAV at any rate). The
    /// audio is prepared as NVIDIA's lm.py does: its first channel, loudness-normalised to
    /// −24 LUFS (pyloudnorm's BS.1770), cut into 80 ms frames (the last padded with zeros), each
    /// encoded by a fresh streaming Mimi.
    public static func readVoice(_ path: String, engine: EngineModel) throws -> PersonaPlexPrompt.Voice {
        let ext = (path as NSString).pathExtension.lowercased()
        guard FileManager.default.fileExists(atPath: path) else { throw ModelError("voice prompt \(path) does not exist") }
        if ext == "pt" {
            do { return .embeddings(try TorchVoiceFile(path: path)) } catch { throw ModelError("voice prompt \(error)") }
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ModelError("voice prompt \(path): cannot read: \(error.localizedDescription)")
        }
        guard data.count >= 12, data.prefix(4).elementsEqual("RIFF".utf8) else {
            throw ModelError("voice prompt \(path) is neither a WAV recording nor a PersonaPlex voice (.pt)")
        }
        let wav: WAV
        do { wav = try WAV.decode(data, path: path) } catch { throw ModelError("voice prompt \(error)") }
        guard wav.channels >= 1, wav.frameCount > 0 else { throw ModelError("voice prompt \(path) holds no audio") }
        var samples = (0..<wav.frameCount).map { wav.samples[$0 * wav.channels] }
        if wav.sampleRate != 24_000 { samples = Resampler.resample(samples, from: wav.sampleRate, to: 24_000) }
        do {
            samples = try Loudness.normalized(samples, sampleRate: 24_000, targetLUFS: -24)
        } catch {
            throw ModelError("voice prompt \(path): \(error)")
        }
        guard let mimi = engine.mimi else { throw ModelError("a WAV voice prompt needs the Mimi codec of \(engine.name)") }
        let frameSize = mimi.frameSize
        let g = engine.config.generatedStreams
        let state = mimi.makeState()
        var frame = [Float](repeating: 0, count: frameSize)
        var codes = [Int32](repeating: 0, count: mimi.numCodebooks)
        var frames: [[Int32]] = []
        var start = 0
        while start < samples.count {
            let n = min(frameSize, samples.count - start)
            for i in 0..<frameSize { frame[i] = i < n ? samples[start + i] : 0 }
            frame.withUnsafeBufferPointer { f in codes.withUnsafeMutableBufferPointer { mimi.encodeStep(f.baseAddress!, codes: $0.baseAddress!, state: state) } }
            frames.append(Array(codes.prefix(g)))
            start += frameSize
        }
        return .codes(frames)
    }
}
