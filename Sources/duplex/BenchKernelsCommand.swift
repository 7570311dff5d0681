import ArgumentParser
import DuplexCore
import DuplexEngine
import Foundation

struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-kernels",
        abstract: "Measure the physical ceilings: sgemm GFLOP/s and matrix×vector GB/s, at 1 and N threads.")

    @Option(name: [.customShort("t"), .long], parsing: .upToNextOption,
            help: "Thread counts to measure (default: 1 and all cores).")
    var threads: [Int] = []

    @Option(help: "Seconds to spend on each measurement.")
    var seconds: Double = 1.0

    @Option(help: "Only the kernels whose name starts with this (sgemm, sgemv, matvec, attention).")
    var only: String?

    func run() throws {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let counts = threads.isEmpty ? Array(Set([1, cores])).sorted() : threads
        print("kernel                          shape                 threads   result")
        for t in counts {
            Kernels.setThreads(t)
            for (m, n, k) in [(512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048), (64, 4096, 1024)] where wanted("sgemm") {
                let gflops = benchSgemm(m: m, n: n, k: k)
                print(row("sgemm (OpenBLAS)", "\(m)×\(k) · \(k)×\(n)", t, String(format: "%7.1f GFLOP/s", gflops)))
            }
            for (r, c) in matvecShapes where wanted("sgemv") {
                let gbs = benchSgemv(rows: r, cols: c)
                print(row("sgemv f32 (OpenBLAS)", "\(r)×\(c)", t, String(format: "%7.1f GB/s", gbs)))
            }
            for (r, c) in matvecShapes where wanted("matvec") {
                let gbs = benchParallel(rows: r, cols: c, bf16: false)
                print(row("matvec f32 (duplex pool)", "\(r)×\(c)", t, String(format: "%7.1f GB/s", gbs)))
            }
            for (r, c) in matvecShapes where wanted("matvec") {
                let gbs = benchParallel(rows: r, cols: c, bf16: true)
                print(row("matvec bf16 (duplex pool)", "\(r)×\(c)", t, String(format: "%7.1f GB/s", gbs)))
            }
            for (heads, headDim, slots, layers) in attentionShapes where wanted("attention") {
                for type in KVCacheType.allCases {
                    let (us, gbs) = benchAttention(type, heads: heads, headDim: headDim, slots: slots, layers: layers)
                    print(row("attention \(type) KV (duplex pool)", "\(heads)×\(headDim) over \(slots)", t,
                              String(format: "%7.1f GB/s  %8.1f µs/layer", gbs, us)))
                }
            }
        }
    }

    private func wanted(_ kernel: String) -> Bool { only.map { kernel.hasPrefix($0) } ?? true }

    /// From a depformer-sized layer to the 7B's gating projection (the big ones exceed any cache).
    private var matvecShapes: [(Int, Int)] { [(512, 256), (1536, 512), (3072, 1024), (4096, 4096), (11264, 4096), (22528, 4096)] }

    private func benchParallel(rows: Int, cols: Int, bf16: Bool) -> Double {
        let x = random(cols)
        var y = [Float](repeating: 0, count: rows)
        if bf16 {
            let w = random(rows * cols).map(HalfPrecision.floatToBF16)
            let s = time {
                y.withUnsafeMutableBufferPointer { yp in ParallelMatvec.bf16(w, x, yp.baseAddress!, rows: rows, cols: cols) }
            }
            return Double(rows * cols * 2) / s / 1e9
        }
        let w = random(rows * cols)
        let s = time {
            y.withUnsafeMutableBufferPointer { yp in ParallelMatvec.f32(w, x, yp.baseAddress!, rows: rows, cols: cols) }
        }
        return Double(rows * cols * 4) / s / 1e9
    }

    /// One query over full rings: the default model's heads (4×64) and the 7B's (32×128), at a
    /// full context and near the start; enough layers that the full rings exceed the caches.
    private var attentionShapes: [(Int, Int, Int, Int)] { [(4, 64, 3000, 24), (4, 64, 10, 4), (32, 128, 3000, 4), (32, 128, 10, 4)] }

    /// µs per layer and GB/s of keys and values read.
    private func benchAttention(_ type: KVCacheType, heads: Int, headDim: Int, slots: Int, layers: Int) -> (Double, Double) {
        var probe = AttentionProbe(type: type, heads: heads, headDim: headDim, slots: slots, layers: layers)
        let s = time { probe.run() } / Double(layers)
        return (s * 1e6, Double(probe.bytesPerQuery) / s / 1e9)
    }

    private func row(_ name: String, _ shape: String, _ t: Int, _ result: String) -> String {
        name.padding(toLength: 32, withPad: " ", startingAt: 0)
            + shape.padding(toLength: 22, withPad: " ", startingAt: 0)
            + String(t).padding(toLength: 10, withPad: " ", startingAt: 0) + result
    }

    /// Runs `body` repeatedly for about `seconds` and returns the best seconds per call.
    private func time(_ body: () -> Void) -> Double {
        body()
        var best = Double.infinity
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            let t0 = MonotonicClock().now()
            body()
            best = min(best, Double(MonotonicClock().now() - t0) / 1e9)
        } while Date() < deadline
        return best
    }

    private func random(_ n: Int) -> [Float] {
        var g = SplitMix64(seed: 1)
        return (0..<n).map { _ in g.nextFloat() - 0.5 }
    }

    private func benchSgemm(m: Int, n: Int, k: Int) -> Double {
        let a = random(m * k), b = random(k * n)
        var c = [Float](repeating: 0, count: m * n)
        let s = time {
            c.withUnsafeMutableBufferPointer { cp in
                Kernels.matmul(a, b, cp.baseAddress!, m: m, n: n, k: k)
            }
        }
        return 2 * Double(m) * Double(n) * Double(k) / s / 1e9
    }

    private func benchSgemv(rows: Int, cols: Int) -> Double {
        let w = random(rows * cols), x = random(cols)
        var y = [Float](repeating: 0, count: rows)
        let s = time {
            y.withUnsafeMutableBufferPointer { yp in Kernels.matvec(w, x, yp.baseAddress!, rows: rows, cols: cols) }
        }
        return Double(rows * cols * 4) / s / 1e9
    }

}
