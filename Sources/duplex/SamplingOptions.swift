import ArgumentParser
import DuplexCore
import DuplexEngine
import Foundation

/// Sampling options shared by every command that runs the LM (`generate`, `talk`, `pipe`, `serve`).
/// Unset options take the repository's `lm_gen_config` if its config.json has one, else LMGen's
/// defaults (text 0.7 / top-25, audio 0.8 / top-250).
struct SamplingOptions: ParsableArguments {
    @Option(help: "Audio temperature (0 = greedy; default 0.8).")
    var temperature: Float?

    @Option(name: .customLong("top-k"), help: "Audio top-k (default 250; 0 = no cut).")
    var topK: Int?

    @Option(help: "Text temperature (0 = greedy; default 0.7).")
    var textTemperature: Float?

    @Option(help: "Text top-k (default 25; 0 = no cut).")
    var textTopK: Int?

    @Option(help: "Seed of the sampling random stream (a run replays exactly).")
    var seed: UInt64 = 42_424_242

    @Option(help: "Classifier-free guidance coefficient (Hibiki: Kyutai's --cfg-coef; 1 = off, the default). Each step then runs twice.")
    var cfg: Float = 1

    @Option(name: .customLong("first-frame"),
            help: "What happens to the first input frame: server (Kyutai's server: the codec restarts after it; n frames in, n out, the first silent) or run-inference (Kyutai's run_inference: its codes reach the LM twice).")
    var firstFrame: String = FirstFrameRule.kyutaiServer.rawValue

    func validate() throws {
        guard FirstFrameRule(rawValue: firstFrame) != nil else {
            throw ValidationError("--first-frame must be server or run-inference, got \(firstFrame)")
        }
        for (name, t) in [("--temperature", temperature), ("--text-temperature", textTemperature)] {
            if let t, !(t >= 0 && t.isFinite) { throw ValidationError("\(name) must be ≥ 0, got \(t)") }
        }
        guard cfg.isFinite, cfg > 0 else { throw ValidationError("--cfg must be a positive number, got \(cfg)") }
        for (name, k) in [("--top-k", topK), ("--text-top-k", textTopK)] {
            if let k, k < 0 { throw ValidationError("\(name) must be ≥ 0, got \(k)") }
        }
    }

    var firstFrameRule: FirstFrameRule { FirstFrameRule(rawValue: firstFrame) ?? .kyutaiServer }

    /// A conversation over `engine` with these settings. A model that only listens (Kyutai STT)
    /// is refused unless the caller reads its text alone (`listening`: `generate` on codes).
    func session(_ engine: EngineModel, listening: Bool = false, prompt: PersonaPlexPrompt? = nil) throws -> Session {
        try check(engine.config, listening: listening)
        let session = engine.makeSession(sampling: parameters(for: engine.config), firstFrame: firstFrameRule, prompt: prompt)
        if let failure = session.failure { throw CLIError("the persona prompt failed: \(failure)") }
        return session
    }

    /// Options this model cannot honour, refused rather than ignored.
    func check(_ config: LMConfig, listening: Bool = false) throws {
        if cfg != 1 && config.conditioning == nil {
            throw CLIError("--cfg \(cfg): classifier-free guidance needs a conditioned model (Hibiki); this \(config.kind.rawValue) model has none")
        }
        if !config.speaks && !listening {
            throw CLIError("this is a speech-to-text model (model_type \"\(config.kind.rawValue)\", dep_q 0): it does not speak; "
                + "use `duplex transcribe --model …` (or `generate --input-codes … --output-codes …` for its text tokens)")
        }
    }

    func parameters(for config: LMConfig) -> SamplingParameters {
        var p = SamplingParameters()
        let repo = config.lmGenConfig
        p.audioTemperature = temperature ?? repo["temp"].map(Float.init) ?? p.audioTemperature
        p.audioTopK = topK ?? repo["top_k"].map { Int($0) } ?? p.audioTopK
        p.textTemperature = textTemperature ?? repo["temp_text"].map(Float.init) ?? p.textTemperature
        p.textTopK = textTopK ?? repo["top_k_text"].map { Int($0) } ?? p.textTopK
        p.seed = seed
        p.cfgCoefficient = cfg
        return p
    }
}
