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

    @Option(help: ArgumentHelp("Quantize the LM as it loads (see `duplex quantize --help` for the formats).", valueName: "format"))
    var quantize: String?

    @Option(help: ArgumentHelp("Instead of timing: compare quantized forms of the model with it as stored, teacher-forced "
        + "(both fed its greedy tokens), per head: relative logit error and top-1 agreement. Comma-separated formats, e.g. q8,q4_k_m,q4_0.",
        valueName: "formats"))
    var quality: String?

    @Option(help: "Steps of the quality comparison.")
    var qualitySteps: Int = 40

    @Flag(inversion: .prefixedNo, help: "Measure the bandwidth floor between steps (--no-floor: steps only, e.g. under a profiler).")
    var floor = true

    @OptionGroup var runtime: LMRuntimeOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if warmup < 0 { throw ValidationError("--warmup must be ≥ 0") }
        if contextFill < 0 { throw ValidationError("--context-fill must be ≥ 0") }
        if exactFill && contextFill == 0 { throw ValidationError("--exact-fill needs --context-fill N") }
        if qualitySteps < 1 { throw ValidationError("--quality-steps must be at least 1") }
        for name in [quantize].compactMap({ $0 }) + (quality?.split(separator: ",").map(String.init) ?? []) where QuantizeRecipe.lm(named: name) == nil {
            throw ValidationError("\(name): not a format duplex makes; use one of " + QuantizeRecipe.lmRecipes.map(\.name).joined(separator: ", "))
        }
        if quality != nil && (quantize != nil || contextFill > 0) {
            throw ValidationError("--quality compares formats against the model as stored: drop --quantize and --context-fill")
        }
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
        /// The very first step of the phase, warm-up or not (for a fresh load: the weights' first touch).
        var firstStepMs = 0.0
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
            if i == 0 { phase.firstStepMs = ms }
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
        if let quality { return try compareQuality(folder, formats: quality.split(separator: ",").map(String.init)) }
        let recipe = quantize.flatMap { QuantizeRecipe.lm(named: $0) }
        let bar = ProgressBar("quantizing the LM to \(recipe?.name ?? "")")
        let loadStart = MonotonicClock().now()
        let lm = try folder.loadLM(quantize: recipe, progress: recipe == nil ? nil : { bar.update($0, of: $1) })
        let loadSeconds = Double(MonotonicClock().now() - loadStart) / 1e9
        bar.finish()
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
        let memoryFloorMs = Double(bytes) / (floorBandwidth * 1e9) * 1000
        // Quantized matrices may be bound by integer-dot throughput rather than by bytes: their
        // compute floor is each format's weights over the pooled in-cache rate measured now.
        let ceilings = floor ? QuantizedCeiling.measure(lm.streamedMatrices) : [:]
        var computeFloorMs = 0.0
        for m in lm.streamedMatrices {
            if let t = m.quantType, let rate = ceilings[t.description] { computeFloorMs += Double(m.rows * m.cols) / rate / 1e6 }
        }
        let floorMs = max(memoryFloorMs, computeFloorMs)
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
            "floor_gbs": floorBandwidth, "memory_floor_ms": memoryFloorMs, "compute_floor_ms": computeFloorMs,
            "compute_ceilings_gweights_per_s": ceilings.sorted { $0.key < $1.key }.map { String(format: "%@ %.1f", $0.key, $0.value) }.joined(separator: ", "),
            "floor_ms": floorMs, "ratio_to_floor": stepMs / floorMs,
            "step_gbs": Double(bytes) / stepMs / 1e6, "context_fill": contextFill,
            "load_seconds": loadSeconds, "first_step_ms": fresh.firstStepMs,
            "load_to_first_step_seconds": loadSeconds + fresh.firstStepMs / 1000,
            "weights": lm.matrixFormats.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "),
        ]
        if let filled {
            let filledMs = median(filled.times)
            // At a filled context the step also streams its KV rings (every visible entry, at the rings' element size).
            let filledFloorMs = max(Double(bytes + filled.kvBytes) / (floorBandwidth * 1e9) * 1000, computeFloorMs)
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
        let order = ["model", "weights", "load_seconds", "first_step_ms", "load_to_first_step_seconds", "dim", "num_layers", "depformer_dim", "depformer_num_layers", "context", "threads", "kv_cache", "steps",
                     "warmup", "first_timed_position", "ms_per_step_median", "ms_per_step_mean", "ms_per_step_min",
                     "temporal_ms_median",
                     "weight_bytes_per_step", "kv_entries_per_step", "kv_bytes_per_step", "sgemv_gbs", "sgemv_gbs_max",
                     "pooled_bf16_gbs", "floor_gbs", "memory_floor_ms", "compute_ceilings_gweights_per_s", "compute_floor_ms", "floor_ms", "ratio_to_floor", "step_gbs", "context_fill",
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

extension BenchLM {
    /// The teacher-forced comparison of each format against the model as stored.
    func compareQuality(_ folder: ModelFolder, formats: [String]) throws {
        let reference = try folder.loadLM()
        var rng = SplitMix64(seed: 1)
        let c = folder.config
        let codes = (0..<(qualitySteps * c.userStreams)).map { _ in Int32(rng.next() % UInt64(c.card)) }
        var rows: [[String: Any]] = []
        for format in formats {
            let recipe = QuantizeRecipe.lm(named: format)!
            let candidate = try folder.loadLM(quantize: recipe)
            let heads = try QuantizationQuality.teacherForced(reference: reference, candidate: candidate, userCodes: codes, steps: qualitySteps)
            let audio = heads.dropFirst()
            let row: [String: Any] = [
                "format": format,
                "weight_bytes_per_step": candidate.weightBytesPerStep,
                "text_rel_error": heads[0].relativeError, "text_top1": heads[0].top1Agreement,
                "audio_rel_error_mean": audio.map(\.relativeError).reduce(0, +) / Double(max(1, audio.count)),
                "audio_rel_error_max": audio.map(\.relativeError).max() ?? 0,
                "audio_top1_mean": audio.map(\.top1Agreement).reduce(0, +) / Double(max(1, audio.count)),
                "audio_top1_min": audio.map(\.top1Agreement).min() ?? 1,
                "heads": heads.map { ["head": $0.name, "rel_error": $0.relativeError, "top1": $0.top1Agreement] as [String: Any] },
            ]
            rows.append(row)
        }
        if json {
            print(try JSONOutput.line(["model": folder.path, "reference": reference.matrixFormats.keys.sorted().joined(separator: "+"),
                                       "steps": qualitySteps, "formats": rows]))
            return
        }
        print("duplex bench-lm --quality: \(folder.path), \(qualitySteps) steps teacher-forced against the model as stored "
              + "(\(reference.matrixFormats.keys.sorted().joined(separator: "+")))")
        print("format     MB/step  text err  text top1  audio err (mean/max)  audio top1 (mean/min)")
        for r in rows {
            print(String(format: "%-9@ %8.1f  %7.2f%%  %8.1f%%  %7.2f%% / %6.2f%%    %7.1f%% / %5.1f%%",
                         r["format"] as! String, Double(r["weight_bytes_per_step"] as! Int) / 1e6,
                         100 * (r["text_rel_error"] as! Double), 100 * (r["text_top1"] as! Double),
                         100 * (r["audio_rel_error_mean"] as! Double), 100 * (r["audio_rel_error_max"] as! Double),
                         100 * (r["audio_top1_mean"] as! Double), 100 * (r["audio_top1_min"] as! Double)))
        }
    }
}

/// The integer-dot throughput of each quantized format in the model with every thread, its
/// matrix resident in cache (a 4096-column block of the format a few hundred KiB per thread, run
/// repeatedly): the ceiling a 4-bit step meets before DRAM does on a machine with few cores.
enum QuantizedCeiling {
    /// Format name → weights per nanosecond (G weights/s), best of several runs.
    static func measure(_ matrices: [WeightMatrix]) -> [String: Double] {
        var types: [QuantType] = []
        for m in matrices { if let t = m.quantType, !types.contains(t) { types.append(t) } }
        var out: [String: Double] = [:]
        for t in types {
            guard let source = matrices.first(where: { $0.quantType == t }) else { continue }
            // Rows of the model's own matrix, as many as keep ~256 KiB per thread in cache.
            let rowBytes = max(1, source.byteCount / max(1, source.rows))
            let rows = min(source.rows, max(8, (256 << 10) * Kernels.threads / rowBytes))
            let block = source.rows(0..<rows)
            let x = [Float](repeating: 0.5, count: block.cols)
            var y = [Float](repeating: 0, count: rows)
            var best = 0.0
            for _ in 0..<5 {
                let reps = 20
                let t0 = MonotonicClock().now()
                for _ in 0..<reps { x.withUnsafeBufferPointer { xb in y.withUnsafeMutableBufferPointer { block.apply(xb.baseAddress!, into: $0.baseAddress!) } } }
                let ns = Double(MonotonicClock().now() - t0)
                best = max(best, Double(reps * rows * block.cols) / ns)
            }
            out[t.description] = best
        }
        return out
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
