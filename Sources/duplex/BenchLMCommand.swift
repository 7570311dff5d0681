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

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if warmup < 0 { throw ValidationError("--warmup must be ≥ 0") }
    }

    func run() throws {
        compute.apply()
        // Bandwidth first, while the model's pages are not yet competing for memory.
        let sgemv = measureSgemv()
        let pooled = measurePooledBF16()
        let folder = try ModelFolder(model)
        let lm = try folder.loadLM()
        let gen = LMGen(model: lm, sampling: .greedy)
        var state = gen.makeState()
        var rng = SplitMix64(seed: 1)
        let c = folder.config
        let codes = (0..<(steps + warmup + 1)).map { _ in (0..<c.userStreams).map { _ in Int32(rng.next() % UInt64(c.card)) } }
        var times: [Double] = []
        times.reserveCapacity(codes.count)
        for (i, frame) in codes.enumerated() {
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try frame.withUnsafeBufferPointer { try gen.step(userCodes: $0, state: &state) }
            let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            if i > warmup { times.append(ms) }
        }
        times.sort()
        let median = times[times.count / 2]
        let mean = times.reduce(0, +) / Double(times.count)
        let bytes = lm.weightBytesPerStep
        let floorMs = Double(bytes) / (sgemv * 1e9) * 1000
        let result: [(String, Any)] = [
            ("model", folder.path), ("dim", c.dim), ("num_layers", c.numLayers), ("depformer_dim", c.depformerDim),
            ("depformer_num_layers", c.depformerNumLayers), ("threads", compute.resolvedThreads), ("steps", times.count),
            ("ms_per_step_median", median), ("ms_per_step_mean", mean), ("ms_per_step_min", times[0]),
            ("weight_bytes_per_step", bytes), ("sgemv_gbs", sgemv), ("pooled_bf16_gbs", pooled),
            ("floor_ms", floorMs), ("ratio_to_floor", median / floorMs),
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

    /// Best of a few runs, GB/s, of OpenBLAS sgemv on a matrix far larger than any cache (the
    /// measure the floors are defined by).
    private func measureSgemv() -> Double {
        let rows = 11264, cols = 4096
        let w = [Float](repeating: 0.5, count: rows * cols), x = [Float](repeating: 1, count: cols)
        var y = [Float](repeating: 0, count: rows)
        return best(bytes: rows * cols * 4) {
            y.withUnsafeMutableBufferPointer { Kernels.matvec(w, x, $0.baseAddress!, rows: rows, cols: cols) }
        }
    }

    /// The same for duplex's pooled bf16 kernel on the 7B's largest matrix shape.
    private func measurePooledBF16() -> Double {
        let rows = 22528, cols = 4096
        let w = [UInt16](repeating: 0x3F00, count: rows * cols), x = [Float](repeating: 1, count: cols)
        var y = [Float](repeating: 0, count: rows)
        return best(bytes: rows * cols * 2) {
            y.withUnsafeMutableBufferPointer { ParallelMatvec.bf16(w, x, $0.baseAddress!, rows: rows, cols: cols) }
        }
    }

    private func best(bytes: Int, _ body: () -> Void) -> Double {
        body()
        var fastest = Double.infinity
        for _ in 0..<8 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            fastest = min(fastest, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        return Double(bytes) / fastest / 1e9
    }
}
