import ArgumentParser
import CBLAS
import DuplexCore
import DuplexEngine
import Foundation

/// Milliseconds per LM step (temporal transformer + depformer + sampling, one frame) against
/// its floor: the weight bytes a step must stream ÷ the machine's matrix×vector bandwidth.
/// With `--context-fill N`, also at a context N steps old (the temporal step attends over every
/// step in its KV ring, so it grows dearer until the ring is full): the state is brought there by
/// `LMGen.fillContext` (synthetic by default, `--exact-fill` runs the N real steps).
struct BenchLM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-lm",
        abstract: "Time the LM's streaming step on a model folder and compare it with the memory-bandwidth floor.")

    @Option(help: "Model folder (see `duplex generate --help`).")
    var model: String

    @Option(help: "Timed steps.")
    var steps: Int = 20

    @Option(help: "Untimed steps first (page in the weights, warm the caches).")
    var warmup: Int = 3

    @Option(help: ArgumentHelp("Also time steps after filling the context with N steps (3000: the default model's whole KV ring).",
                               discussion: "Both the fresh and the filled figures are reported. 0: fresh only."))
    var contextFill: Int = 0

    @Flag(help: "Fill the context with real LM steps (zero user codes) instead of synthetic KV entries (slow on big models).")
    var exactFill = false

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Flag(inversion: .prefixedNo, help: "Measure the bandwidth floor between steps (--no-floor: steps only, e.g. under a profiler).")
    var floor = true

    @OptionGroup var runtime: LMRuntimeOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if warmup < 0 { throw ValidationError("--warmup must be ≥ 0") }
        if contextFill < 0 { throw ValidationError("--context-fill must be ≥ 0") }
        if exactFill && contextFill == 0 { throw ValidationError("--exact-fill needs --context-fill N") }
    }

    /// Timed steps of one state, and the bandwidth probes taken between them.
    private struct Phase {
        var times: [Double] = []
        /// The temporal transformer's part of each step (up to the text token; the rest is the depformer).
        var temporal: [Double] = []
        var sgemv: [Double] = []
        var pooled: [Double] = []
        /// Before the first timed step: its position, the KV entries and bytes it reads.
        var position = 0
        var contextEntries = 0
        var kvBytes = 0
    }

    private func measure(_ gen: LMGen, _ state: inout LMGen.State, codes: [Int32], probe: BandwidthProbe?) throws -> Phase {
        let userStreams = gen.config.userStreams
        var phase = Phase()
        phase.times.reserveCapacity(steps)
        phase.temporal.reserveCapacity(steps)
        phase.sgemv.reserveCapacity(steps)
        phase.pooled.reserveCapacity(steps)
        for i in 0..<(steps + warmup) {
            if i == warmup {
                phase.position = state.offset
                phase.contextEntries = state.model.nextStepContextEntries
                phase.kvBytes = state.model.nextStepKVBytes
            }
            let t0 = MonotonicClock().now()
            var temporalNs: UInt64 = 0
            _ = try codes.withUnsafeBufferPointer {
                try gen.step(userCodes: UnsafeBufferPointer(rebasing: $0[(i * userStreams)..<((i + 1) * userStreams)]), state: &state,
                             temporalDone: { temporalNs = MonotonicClock().now() - t0 })
            }
            let ms = Double(MonotonicClock().now() - t0) / 1e6
            guard i >= warmup else { continue }
            phase.times.append(ms)
            phase.temporal.append(Double(temporalNs) / 1e6)
            guard let probe else { continue }
            phase.pooled.append(probe.pooledBF16())
            phase.sgemv.append(probe.sgemv())
            // The pool's workers spin for a while after a job; let them fall asleep so they do not
            // compete with the next step (or the next probe).
            usleep(150_000)
        }
        return phase
    }

    func run() throws {
        compute.apply()
        let folder = try ModelFolder(model)
        let lm = try folder.loadLM()
        let gen = LMGen(model: lm, sampling: .greedy)
        var rng = SplitMix64(seed: 1)
        let c = folder.config
        // One flat array, so the loop below allocates nothing (a malloc count over the run is the step's).
        let codes = (0..<((steps + warmup) * c.userStreams)).map { _ in Int32(rng.next() % UInt64(c.card)) }
        // The floor's bandwidth is measured between the steps, so both see the same machine: on
        // a shared machine bandwidth swings by 2x from minute to minute.
        let probe = floor ? BandwidthProbe() : nil
        var state = gen.makeState(kvCache: runtime.resolvedKVCache)
        let fresh = try measure(gen, &state, codes: codes, probe: probe)
        var filled: Phase?
        var fillSeconds = 0.0
        if contextFill > 0 {
            let t0 = MonotonicClock().now()
            try gen.fillContext(&state, steps: contextFill, seed: 2, exact: exactFill)
            fillSeconds = Double(MonotonicClock().now() - t0) / 1e9
            filled = try measure(gen, &state, codes: codes, probe: probe)
        }

        func median(_ v: [Double]) -> Double {
            guard !v.isEmpty else { return .nan }
            var p = Percentiles(capacity: v.count)
            for x in v { p.record(x) }
            return p.percentile(50)
        }
        let bytes = lm.weightBytesPerStep
        let sgemv = fresh.sgemv + (filled?.sgemv ?? []), pooled = fresh.pooled + (filled?.pooled ?? [])
        let bandwidth = median(sgemv)
        // The floor streams the step's weights at the best rate this machine showed at this thread
        // count: OpenBLAS's sgemv is single-threaded (the engine keeps it so), duplex's pooled bf16
        // kernel uses every thread; the faster one sets the (stricter) floor.
        // (No probes, --no-floor: no floor, NaN, null in the JSON.)
        let floorBandwidth = sgemv.isEmpty ? .nan : max(bandwidth, median(pooled).isNaN ? 0 : median(pooled))
        let floorMs = Double(bytes) / (floorBandwidth * 1e9) * 1000
        let stepMs = median(fresh.times)
        var result: [String: Any] = [
            "model": folder.path, "dim": c.dim, "num_layers": c.numLayers, "depformer_dim": c.depformerDim,
            "depformer_num_layers": c.depformerNumLayers, "context": c.context, "threads": compute.resolvedThreads,
            "kv_cache": runtime.resolvedKVCache.rawValue,
            "steps": fresh.times.count, "warmup": warmup, "first_timed_position": fresh.position,
            "ms_per_step_median": stepMs, "ms_per_step_mean": fresh.times.reduce(0, +) / Double(fresh.times.count),
            "ms_per_step_min": fresh.times.min() ?? .nan, "temporal_ms_median": median(fresh.temporal),
            "weight_bytes_per_step": bytes,
            "kv_entries_per_step": fresh.contextEntries, "kv_bytes_per_step": fresh.kvBytes,
            "sgemv_gbs": bandwidth, "sgemv_gbs_max": sgemv.max() ?? .nan, "pooled_bf16_gbs": median(pooled),
            "floor_gbs": floorBandwidth, "floor_ms": floorMs, "ratio_to_floor": stepMs / floorMs,
            "step_gbs": Double(bytes) / stepMs / 1e6, "context_fill": contextFill,
        ]
        if let filled {
            let filledMs = median(filled.times)
            // At a filled context the step also streams its KV rings (every visible entry, at the rings' element size).
            let filledFloorMs = Double(bytes + filled.kvBytes) / (floorBandwidth * 1e9) * 1000
            result["filled"] = [
                "fill": exactFill ? "exact" : "synthetic", "fill_seconds": fillSeconds,
                "first_timed_position": filled.position, "steps": filled.times.count,
                "ms_per_step_median": filledMs, "ms_per_step_mean": filled.times.reduce(0, +) / Double(filled.times.count),
                "ms_per_step_min": filled.times.min() ?? .nan, "temporal_ms_median": median(filled.temporal),
                "kv_entries_per_step": filled.contextEntries, "kv_bytes_per_step": filled.kvBytes,
                "floor_ms": filledFloorMs, "ratio_to_floor": filledMs / filledFloorMs,
                "ratio_to_fresh": filledMs / stepMs, "temporal_ratio_to_fresh": median(filled.temporal) / median(fresh.temporal),
            ] as [String: Any]
        }
        if json {
            print(try JSONOutput.line(result))
            return
        }
        // For people: the JSON's keys in reading order, the filled context's after the fresh ones.
        let order = ["model", "dim", "num_layers", "depformer_dim", "depformer_num_layers", "context", "threads", "kv_cache", "steps",
                     "warmup", "first_timed_position", "ms_per_step_median", "ms_per_step_mean", "ms_per_step_min",
                     "temporal_ms_median",
                     "weight_bytes_per_step", "kv_entries_per_step", "kv_bytes_per_step", "sgemv_gbs", "sgemv_gbs_max",
                     "pooled_bf16_gbs", "floor_gbs", "floor_ms", "ratio_to_floor", "step_gbs", "context_fill",
                     "fill", "fill_seconds", "ratio_to_fresh", "temporal_ratio_to_fresh"]
        func show(_ dict: [String: Any], prefix: String) {
            for key in order {
                guard let value = dict[key] else { continue }
                let v = (value as? Double).map { String(format: "%.3f", $0) } ?? "\(value)"
                print((prefix + key).padding(toLength: 32, withPad: " ", startingAt: 0) + v)
            }
        }
        show(result, prefix: "")
        if let nested = result["filled"] as? [String: Any] { show(nested, prefix: "filled.") }
    }
}

/// Matrix×vector bandwidth on matrices far larger than any cache: OpenBLAS sgemv f32 (the
/// measure the floors are defined by) and duplex's pooled bf16 kernel on the 7B's largest shape.
private final class BandwidthProbe {
    let f32Rows = 11264, bf16Rows = 22528, cols = 4096
    let f32: [Float]
    let bf16: [UInt16]
    let x: [Float]
    var y: [Float]

    init() {
        var g = SplitMix64(seed: 3)
        f32 = (0..<(f32Rows * cols)).map { _ in g.nextFloat() - 0.5 }
        bf16 = (0..<(bf16Rows * cols)).map { _ in HalfPrecision.floatToBF16(g.nextFloat() - 0.5) }
        x = (0..<cols).map { _ in g.nextFloat() - 0.5 }
        y = [Float](repeating: 0, count: bf16Rows)
    }

    /// GB/s of one call.
    func sgemv() -> Double {
        let t0 = MonotonicClock().now()
        y.withUnsafeMutableBufferPointer { Kernels.matvec(f32, x, $0.baseAddress!, rows: f32Rows, cols: cols) }
        return Double(f32Rows * cols * 4) / Double(MonotonicClock().now() - t0)
    }

    func pooledBF16() -> Double {
        let t0 = MonotonicClock().now()
        y.withUnsafeMutableBufferPointer { ParallelMatvec.bf16(bf16, x, $0.baseAddress!, rows: bf16Rows, cols: cols) }
        return Double(bf16Rows * cols * 2) / Double(MonotonicClock().now() - t0)
    }
}
