import ArgumentParser
import CBLAS
import DuplexCore
import DuplexEngine
import Foundation

/// Milliseconds per LM step (temporal transformer + depformer + sampling, one frame) against
/// its floor: the weight bytes a step must stream ÷ the machine's matrix×vector bandwidth.
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

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Flag(inversion: .prefixedNo, help: "Measure the bandwidth floor between steps (--no-floor: steps only, e.g. under a profiler).")
    var floor = true

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if warmup < 0 { throw ValidationError("--warmup must be ≥ 0") }
    }

    func run() throws {
        compute.apply()
        let folder = try ModelFolder(model)
        let lm = try folder.loadLM()
        let gen = LMGen(model: lm, sampling: .greedy)
        var state = gen.makeState()
        var rng = SplitMix64(seed: 1)
        let c = folder.config
        // One flat array, so the loop below allocates nothing (a malloc count over the run is the step's).
        let codes = (0..<((steps + warmup) * c.userStreams)).map { _ in Int32(rng.next() % UInt64(c.card)) }
        // The floor's bandwidth is measured between the steps, so both see the same machine: on
        // a shared machine bandwidth swings by 2x from minute to minute.
        let probe = floor ? BandwidthProbe() : nil
        var times: [Double] = [], sgemv: [Double] = [], pooled: [Double] = []
        times.reserveCapacity(steps)
        sgemv.reserveCapacity(steps)
        pooled.reserveCapacity(steps)
        for i in 0..<(steps + warmup) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try codes.withUnsafeBufferPointer {
                try gen.step(userCodes: UnsafeBufferPointer(rebasing: $0[(i * c.userStreams)..<((i + 1) * c.userStreams)]), state: &state)
            }
            let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            guard i >= warmup else { continue }
            times.append(ms)
            guard let probe else { continue }
            pooled.append(probe.pooledBF16())
            sgemv.append(probe.sgemv())
            // The pool's workers spin for a while after a job; let them fall asleep so they do not
            // compete with the next step (or the next probe).
            usleep(150_000)
        }
        func median(_ v: [Double]) -> Double { v.isEmpty ? .nan : v.sorted()[v.count / 2] }
        let bytes = lm.weightBytesPerStep
        let bandwidth = median(sgemv)
        // The floor streams the step's weights at the best rate this machine showed at this thread
        // count: OpenBLAS's sgemv is single-threaded (the engine keeps it so), duplex's pooled bf16
        // kernel uses every thread; the faster one sets the (stricter) floor.
        let floorBandwidth = max(bandwidth, median(pooled).isNaN ? 0 : median(pooled))
        let floorMs = Double(bytes) / (floorBandwidth * 1e9) * 1000
        let stepMs = median(times)
        let result: [(String, Any)] = [
            ("model", folder.path), ("dim", c.dim), ("num_layers", c.numLayers), ("depformer_dim", c.depformerDim),
            ("depformer_num_layers", c.depformerNumLayers), ("threads", compute.resolvedThreads), ("steps", times.count),
            ("ms_per_step_median", stepMs), ("ms_per_step_mean", times.reduce(0, +) / Double(times.count)),
            ("ms_per_step_min", times.min()!), ("weight_bytes_per_step", bytes),
            ("sgemv_gbs", bandwidth), ("sgemv_gbs_max", sgemv.max() ?? .nan), ("pooled_bf16_gbs", median(pooled)),
            ("floor_gbs", floorBandwidth), ("floor_ms", floorMs), ("ratio_to_floor", stepMs / floorMs),
            ("step_gbs", Double(bytes) / stepMs / 1e6),
        ]
        if json {
            let body = result.map { key, value -> String in
                let v: String
                if let d = value as? Double { v = String(format: "%.4g", d) } else if let i = value as? Int { v = "\(i)" }
                else { v = "\"\(value)\"" }
                return "\"\(key)\": \(v)"
            }
            print("{" + body.joined(separator: ", ") + "}")
        } else {
            for (key, value) in result {
                let v = (value as? Double).map { String(format: "%.3f", $0) } ?? "\(value)"
                print(key.padding(toLength: 24, withPad: " ", startingAt: 0) + v)
            }
        }
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
        let t0 = DispatchTime.now().uptimeNanoseconds
        y.withUnsafeMutableBufferPointer { Kernels.matvec(f32, x, $0.baseAddress!, rows: f32Rows, cols: cols) }
        return Double(f32Rows * cols * 4) / Double(DispatchTime.now().uptimeNanoseconds - t0)
    }

    func pooledBF16() -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        y.withUnsafeMutableBufferPointer { ParallelMatvec.bf16(bf16, x, $0.baseAddress!, rows: bf16Rows, cols: cols) }
        return Double(bf16Rows * cols * 2) / Double(DispatchTime.now().uptimeNanoseconds - t0)
    }
}
