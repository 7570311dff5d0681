import ArgumentParser
import DuplexAudio
import DuplexCore
import DuplexEngine
import Foundation

/// The latency benchmarking harness: mic-to-speaker latency term by term, real-time factor,
/// deadline misses, allocations per frame and peak RSS, for any model folder or any architecture.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure mic-to-speaker latency (every term), real-time factor, deadline misses, allocations, memory.",
        discussion: """
            Plays a recording (or a built-in speech-like signal) into the engine as a live microphone would and
            plays the answers out in real time on a virtual speaker (or real devices with --alsa), with capture,
            model and playback on their own threads as in `talk`. --flat-out pushes frames as fast as the model
            takes them instead (compute cost only). --random-weights --config NAME measures an architecture
            without a checkpoint: default, small (dim 512, 8 layers, depformer 256×2), medium (dim 2048,
            16 layers, real depformer), 7b (moshiko's shape, bf16), or a Kyutai config.json path.
            """)

    @OptionGroup var model: ModelOption

    @Flag(help: "Made-up weights for --config instead of a model folder.")
    var randomWeights = false

    @Option(help: "Architecture for --random-weights: default, small, medium, 7b, or a config.json path (default: default).")
    var config: String?

    @Option(name: .customLong("context-fill"),
            help: "LM steps already in the context before the measured frames (e.g. 3000: a full context, where attention reads the whole window). Filled as real steps would fill it, without their cost.")
    var contextFill: Int = 0

    @Option(help: "Input audio: WAV (any rate, mixed to mono) or raw s16le 24 kHz; default: a built-in speech-like signal.")
    var input: String?

    @Option(help: "Frames to measure (80 ms each), after warm-up.")
    var frames: Int = 250

    @Option(help: "Frames run first and not counted.")
    var warmup: Int = 10

    @Flag(help: "Push frames as fast as the model takes them (no real-time pacing).")
    var flatOut = false

    @Flag(help: "Run through ALSA devices so their buffers are included.")
    var alsa = false

    @Option(name: [.customShort("i"), .long], help: "ALSA capture device for --alsa (default: default).")
    var inputDevice: String?

    @Option(name: [.customShort("o"), .long], help: "ALSA playback device for --alsa (default: default).")
    var outputDevice: String?

    @Flag(name: .customLong("positive-control"),
          help: "Allocate deliberately once per frame, to prove the allocation counter counts (the report must then show ≥ 1 per frame).")
    var positiveControl = false

    @Option(help: "Write the report as JSON here.")
    var json: String?

    @Option(help: "Write latency per frame and its histogram as SVG here.")
    var plot: String?

    @OptionGroup var capture: CaptureOptions
    @OptionGroup var room: RoomOption
    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var runtime: LMRuntimeOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        if frames < 2 { throw ValidationError("--frames must be at least 2") }
        if warmup < 0 { throw ValidationError("--warmup must be ≥ 0") }
        if contextFill < 0 { throw ValidationError("--context-fill must be ≥ 0") }
        if alsa && flatOut { throw ValidationError("--alsa runs at the devices' pace; drop --flat-out") }
        if !alsa && (inputDevice != nil || outputDevice != nil) {
            throw ValidationError("-i/--input-device and -o/--output-device choose ALSA devices: add --alsa (without it the harness uses a virtual microphone and speaker)")
        }
        if config != nil && !randomWeights { throw ValidationError("--config describes made-up weights: add --random-weights, or give --model DIR") }
        if randomWeights && model.model != nil { throw ValidationError("--random-weights makes its own weights: drop --model (or drop --random-weights)") }
        if alsa && input != nil { throw ValidationError("--input is the virtual microphone's signal; with --alsa the microphone is the device") }
        if room.room != nil && alsa { throw ValidationError("--room simulates a room between the virtual speaker and microphone; with --alsa the room is real: drop one") }
        if room.room != nil && flatOut { throw ValidationError("--room needs real-time pacing (the echo comes back in time): drop --flat-out") }
        _ = try room.parameters()
    }

    func run() throws {
        compute.apply()
        let engine = try loadEngine()
        let session = try sampling.session(engine)
        if contextFill > 0 {
            let capacity = engine.config.context
            if contextFill > capacity { warn("note: --context-fill \(contextFill) is beyond the LM's \(capacity)-step context; the window is simply full") }
            try session.fillContext(steps: contextFill)
        }
        var options = BenchHarness.Options()
        options.frames = frames
        options.warmupFrames = warmup
        var source: FrameSource, sink: FrameSink
        if alsa {
            let device = try ALSAAudioDevice(input: inputDevice ?? "default", output: outputDevice ?? "default")
            options.loop.periodFrames = device.periodFrames
            (source, sink) = (device, device)
        } else {
            source = SignalSource(try inputSignal(), loop: true, realtime: !flatOut)
            sink = flatOut ? NullSink() : VirtualSpeaker()
        }
        // The processing `talk` would run, on the capture thread, between the (simulated) room
        // and the model.
        let roomParameters = try room.parameters()
        if let roomParameters { (source, sink, _) = RoomOption.insert(roomParameters, source: source, sink: sink, alignment: .clock) }
        let processing: EchoCancellation?
        (source, sink, processing, _) = CaptureOptions.wrap(source: source, sink: sink, options: capture.resolve(defaultCanceller: .off), alignment: .clock)
        let processor: FrameProcessor = positiveControl ? AllocatingProcessor(session) : session
        let harness = BenchHarness(processor: processor, source: source, sink: sink, options: options, allocationCount: Allocations.counter)
        Allocations.start()
        warn("running \(frames + warmup) frames (\(String(format: "%.1f", Double(frames + warmup) * 0.08)) s of audio)\(flatOut ? " flat out" : " in real time")"
             + (contextFill > 0 ? " after \(contextFill) steps of context" : "") + "…")
        let kvAtStart = session.nextStepKVBytes
        var report = try harness.run(contextFrames: contextFill)
        Allocations.stop()
        report.capture = processing.map { BenchHarness.CaptureStage($0, room: roomParameters?.spec) }
        report.lmStep = .init(kvCache: engine.kvCache.rawValue, weightBytes: engine.lm.weightBytesPerStep, kvBytesAtStart: kvAtStart,
                              kvBytesAtEnd: session.nextStepKVBytes)
        let mode = flatOut ? "flat out" : alsa ? "ALSA \(inputDevice ?? "default") → \(outputDevice ?? "default")" : "real-time paced"
        let title = "duplex bench: \(engine.name), \(compute.resolvedThreads) thread(s), \(mode)" + (contextFill > 0 ? ", context filled to \(contextFill)" : "")
            + (roomParameters != nil ? ", simulated room" : "")
        print(report.table(title: title), terminator: "")
        let c = engine.config
        let extra = ["model": engine.name, "threads": "\(compute.resolvedThreads)", "mode": flatOut ? "flat_out" : (alsa ? "alsa" : "realtime"),
                     "lm": "dim \(c.dim), \(c.numLayers) layers, depformer \(c.depformerDim)×\(c.depformerNumLayers)"]
        if let json { try write(report.json(extra: extra), to: json) }
        if let plot { try write(report.svg(title: title), to: plot) }
    }

    private func loadEngine() throws -> EngineModel {
        let config = self.config ?? "default"
        // The embedded model's weights are random already, its codec shaped by its own config.
        guard randomWeights, config != "default" else {
            return randomWeights ? try ModelOption(model: ModelOption.defaultModelPath, quantize: model.quantize).load(runtime) : try model.load(runtime)
        }
        let lmConfig = try Self.architecture(config)
        let start = Date()
        let matrices: DType = lmConfig.dim >= 2048 ? .bf16 : .f32
        let store = WeightStore(randomSeed: 1, matrixType: matrices)
        let recipe = try model.recipe
        store.quantizeRecipe = recipe
        let bar = ProgressBar("quantizing the LM to \(recipe?.name ?? "")")
        if recipe != nil { store.onQuantizeProgress = { bar.update($0, of: $1) } }
        let lm = LMModel(store: store, config: lmConfig)
        bar.finish()
        try store.finish()
        let mimi = try Mimi(store: WeightStore(randomSeed: 2), config: .released(codebooks: max(lmConfig.generatedStreams, lmConfig.userStreams)))
        warn(String(format: "made up %@ random weights (%@ matrices) in %.1f s", config, recipe?.name ?? matrices.rawValue, Date().timeIntervalSince(start)))
        return try EngineModel(mimi: mimi, lm: lm, tokenizer: nil, name: "random \(config)", kvCache: runtime.resolvedKVCache)
    }

    static func architecture(_ name: String) throws -> LMConfig {
        var c = LMConfig.moshi7B
        switch name {
        case "7b":
            break
        case "medium":
            c.dim = 2048; c.numHeads = 16; c.numLayers = 16
        case "small":
            c.dim = 512; c.numHeads = 8; c.numLayers = 8
            c.depformerDim = 256; c.depformerNumHeads = 4; c.depformerNumLayers = 2
            c.depformerDimFeedforward = Int(4.125 * 256)
        default:
            guard FileManager.default.fileExists(atPath: name) else {
                throw ValidationError("--config \(name): not a known architecture (default, small, medium, 7b) nor a config.json file")
            }
            return try LMConfig(kyutaiConfigPath: name)
        }
        return c
    }

    private func inputSignal() throws -> [Float] {
        guard let input else { return SpeechLikeSignal.make(samples: 12 * 24_000) }
        let header = FileHandle(forReadingAtPath: input)?.readData(ofLength: 4) ?? Data()
        return try CodecAudio.read(input, raw: !header.elementsEqual("RIFF".utf8), sampleRate: 24_000)
    }

    private func write(_ text: String, to path: String) throws {
        do { try text.write(toFile: path, atomically: true, encoding: .utf8) } catch {
            throw CLIError("cannot write \(path): \(error.localizedDescription)")
        }
    }
}

/// A deterministic voice-like test signal: a gliding pitch with harmonics through a syllable
/// envelope, with pauses, so the benchmarks exercise speech and silence without a recording (what
/// is encoded does not change the cost, but it keeps codes realistic).
enum SpeechLikeSignal {
    static func make(samples count: Int, sampleRate: Int = 24_000) -> [Float] {
        var rng = SplitMix64(seed: 2024)
        var phase = 0.0
        return (0..<count).map { i in
            let t = Double(i) / Double(sampleRate)
            let f0 = 120 + 40 * sin(2 * Double.pi * 0.3 * t) + 15 * sin(2 * Double.pi * 2.1 * t)
            phase += 2 * Double.pi * f0 / Double(sampleRate)
            var v = 0.0
            for h in 1...10 { v += sin(Double(h) * phase) / Double(h * h) * (h == 3 || h == 7 ? 2 : 1) }
            let syllable = max(0, sin(2 * Double.pi * 3.5 * t))
            let phrase = (t.truncatingRemainder(dividingBy: 4)) < 3 ? 1.0 : 0.0   // 1 s pause every 4 s
            return Float(0.25 * syllable * phrase * v) + 0.003 * (rng.nextFloat() - 0.5)
        }
    }
}

/// The positive control of the allocation counter: the session, plus one heap allocation per
/// frame that the optimizer cannot remove.
final class AllocatingProcessor: FrameProcessor {
    private let inner: FrameProcessor
    private var kept: [Int] = []
    init(_ inner: FrameProcessor) { self.inner = inner }
    var frameSize: Int { inner.frameSize }
    var failure: Error? { inner.failure }
    func process(_ input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, stamps: inout FrameTimestamps,
                 clock: any FrameClock) -> Int32? {
        kept = [Int](repeating: Int(input[0].bitPattern), count: 64)   // a fresh buffer every frame
        return inner.process(input, output: output, stamps: &stamps, clock: clock)
    }
}
