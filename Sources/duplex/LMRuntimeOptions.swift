import ArgumentParser
import DuplexCore
import DuplexEngine

/// How the LM computes, for every command that runs it (`talk`, `pipe`, `bench`, `generate`,
/// `serve`, `bench-lm`): choices of the runtime, not of the model's files or of sampling, applied
/// where the model is loaded so every session made from it follows them.
struct LMRuntimeOptions: ParsableArguments {
    @Option(name: .customLong("kv-cache"),
            help: ArgumentHelp("What the LM's KV cache stores: bf16 (default; half of f32's bytes, the step at a long context reads them all), q8 (int8 per 32 values with an f16 scale, ggml's Q8_0: about a quarter) or f32 (exact, as Kyutai's CPU reference).",
                               valueName: "type"))
    var kvCache: KVCacheType?

    init() {}

    /// The element type of every session's KV rings.
    var resolvedKVCache: KVCacheType { kvCache ?? .bf16 }
    /// Whether anything was chosen (commands that run no local LM refuse it).
    var given: Bool { kvCache != nil }
}

// An invalid value is refused by the parser with the list of valid ones (the enum's cases).
extension KVCacheType: ExpressibleByArgument {}
