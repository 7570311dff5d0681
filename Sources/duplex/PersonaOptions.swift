import ArgumentParser
import DuplexCore
import DuplexEngine
import Foundation

/// PersonaPlex's persona (`talk`, `pipe`, `generate`, `serve`): replayed before the conversation
/// as NVIDIA's server does (voice prompt, silence, role text, silence).
struct PersonaOptions: ParsableArguments {
    @Option(name: .customLong("voice-prompt"),
            help: "PersonaPlex: the voice to answer in: a WAV recording (any rate; normalised to -24 LUFS and encoded) or one of NVIDIA's voices/*.pt files.")
    var voicePrompt: String?

    @Option(name: .customLong("text-prompt"),
            help: "PersonaPlex: the role, e.g. \"You are a wise teacher.\" (wrapped in <system> tags as NVIDIA's server does).")
    var textPrompt: String?

    var given: Bool { voicePrompt != nil || textPrompt != nil }

    /// Refuses the options on a model that has no persona, and a voice file that is no voice,
    /// before the (long) load.
    func check(_ config: LMConfig) throws {
        if given && config.kind != .personaplex {
            throw CLIError("--voice-prompt and --text-prompt are PersonaPlex's (nvidia/personaplex-7b-v1, model_type \"personaplex\"); "
                           + "this is a \(config.kind.rawValue) model")
        }
        guard let voicePrompt else { return }
        guard let handle = FileHandle(forReadingAtPath: voicePrompt) else { throw CLIError("voice prompt \(voicePrompt) does not exist or cannot be read") }
        defer { try? handle.close() }
        let head = (try? handle.read(upToCount: 4)) ?? Data()
        let isZip = head.elementsEqual([0x50, 0x4B, 0x03, 0x04]), isRIFF = head.elementsEqual("RIFF".utf8)
        guard isZip || isRIFF else {
            throw CLIError("voice prompt \(voicePrompt) is neither a WAV recording nor a PersonaPlex voice (.pt, a zip of tensors)")
        }
    }

    /// The prompt sessions replay: nil for other models; for PersonaPlex without options, NVIDIA's silences alone.
    func prompt(for engine: EngineModel) throws -> PersonaPlexPrompt? {
        try check(engine.config)
        guard engine.config.kind == .personaplex else { return nil }
        let prompt = try PersonaPrompts(engine: engine).prompt(voice: voicePrompt, text: textPrompt)
        warn("persona prompt: \(prompt.frameCount) frames (" + [voicePrompt.map { "voice \($0)" }, textPrompt.map { "role \"\($0)\"" }]
            .compactMap { $0 }.joined(separator: ", ") + (given ? "" : "silence only") + "), replayed before the conversation")
        return prompt
    }
}
