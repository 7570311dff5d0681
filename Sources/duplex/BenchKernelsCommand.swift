import ArgumentParser
import CQuant
import DuplexCore
import DuplexEngine
import Foundation

struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-kernels",
        abstract: "Measure the physical ceilings: sgemm GFLOP/s and matrix×vector GB/s, at 1 and N threads; quantized matrix×vector G weights/s on one thread.")

    @Option(name: [.customShort("t"), .long], parsing: .upToNextOption,
            help: "Thread counts to measure (default: 1 and all cores).")
    var threads: [Int] = []

    @Option(help: "Seconds to spend on each measurement.")
    var seconds: Double = 1.0

    @Option(help: "Only the kernels whose name starts with this (sgemm, sgemv, matvec, attention, quantized).")
    var only: String?

    @Flag(help: "Quantized kernels: measure every instruction set this CPU runs, not only the dispatched one and scalar.")
    var allIsas = false

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
            for (r, c) in matvecShapes where wanted("matvec") {
                let gbs = benchF16(rows: r, cols: c)
                print(row("matvec f16 (duplex pool)", "\(r)×\(c)", t, String(format: "%7.1f GB/s", gbs)))
            }
            for (heads, headDim, slots, layers) in attentionShapes where wanted("attention") {
                for type in KVCacheType.allCases {
                    let (us, gbs) = benchAttention(type, heads: heads, headDim: headDim, slots: slots, layers: layers)
                    print(row("attention \(type) KV (duplex pool)", "\(heads)×\(headDim) over \(slots)", t,
                              String(format: "%7.1f GB/s  %8.1f µs/layer", gbs, us)))
                }
            }
        }
        if wanted("quantized") { benchQuantized() }
    }

    // MARK: Quantized kernels (CQuant)

    /// The last-level cache one core reaches: sysfs's (glibc's sysconf reports the whole socket's
    /// L3 on multi-die EPYCs, 384 MB where a core sees 32 MB), capped at 256 MB.
    private func lastLevelCacheBytes() -> Int {
        for index in [3, 2] {
            let path = "/sys/devices/system/cpu/cpu0/cache/index\(index)/size"
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
            let unit = t.last.map { $0 == "K" ? 1 << 10 : $0 == "M" ? 1 << 20 : 1 } ?? 1
            if let n = Int(t.filter(\.isNumber)) { return min(n * unit, 256 << 20) }
        }
        return min(max(sysconf(Int32(_SC_LEVEL3_CACHE_SIZE)), 0), 256 << 20)
    }

    /// One thread, per format and instruction set: G weights/s with the matrix resident in cache
    /// (256×2048, ≤ 0.6 MB: the integer-dot compute ceiling) and streamed from DRAM (4096 columns,
    /// rows enough for 6× the last-level cache, at least 192 MB), plus the bytes/s that stream is.
    private func benchQuantized() {
        let formats: [(cq_type, Int32)] = [(CQ_Q8_0, 0), (CQ_Q4_0, 0), (CQ_IQ4_NL, 0), (CQ_Q4_K, 0), (CQ_Q6_K, 0),
                                           (CQ_MLX_Q4, 32), (CQ_MLX_Q8, 64)]
        var names = [UnsafePointer<CChar>?](repeating: nil, count: 8)
        let available = names.withUnsafeMutableBufferPointer { Int(cq_available_isas($0.baseAddress, 8)) }
        let all = names[0..<available].map { String(cString: $0!) }
        let isas = allIsas ? all : Array(Set([all[0], "scalar"])).sorted { all.firstIndex(of: $0)! < all.firstIndex(of: $1)! }
        let dramBytes = max(6 * lastLevelCacheBytes(), 192 << 20)
        for (type, group) in formats {
            let kind = String(cString: cq_type_name(type)) + (group > 0 ? " g\(group)" : "")
            let cache = QuantBench(type, rows: 256, cols: 2048, group: group)
            let big = QuantBench(type, rows: Int32(dramBytes / cq_row_bytes(type, 4096)), cols: 4096, group: group)
            for isa in isas {
                _ = cq_set_isa(isa)
                let inCache = cache.weightsPerSecond(time: time)
                let streamed = big.weightsPerSecond(time: time)
                let name = "matvec \(kind) \(isa)"
                print(row(name, "256×2048 (cache)", 1, String(format: "%7.1f G weights/s", inCache / 1e9)))
                print(row(name, "\(big.rows)×4096 (DRAM)", 1,
                          String(format: "%7.1f G weights/s  %5.1f GB/s", streamed / 1e9, streamed * big.bytesPerWeight / 1e9)))
            }
            _ = cq_set_isa(nil)
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

    private func benchF16(rows: Int, cols: Int) -> Double {
        let x = random(cols)
        var y = [Float](repeating: 0, count: rows)
        let w = random(rows * cols).map(HalfPrecision.floatToF16)
        let s = time { y.withUnsafeMutableBufferPointer { yp in ParallelMatvec.f16(w, x, yp.baseAddress!, rows: rows, cols: cols) } }
        return Double(rows * cols * 2) / s / 1e9
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

/// A random matrix of one CQuant format (random codes, every scale the same small value) and a
/// quantized activation for it, in memory owned here.
private final class QuantBench {
    let rows: Int32
    let bytesPerWeight: Double
    private var matrix: cq_matrix
    private let data: UnsafeMutableRawPointer
    private let params: UnsafeMutablePointer<UInt16>?
    private let act: UnsafeMutableRawPointer

    init(_ type: cq_type, rows: Int32, cols: Int32, group: Int32) {
        self.rows = rows
        let rowBytes = cq_row_bytes(type, cols)
        let bytes = Int(rows) * rowBytes
        bytesPerWeight = Double(rowBytes) / Double(cols) + (group > 0 ? 4 / Double(group) : 0)
        data = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        var g = SplitMix64(seed: 5)
        let words = data.bindMemory(to: UInt64.self, capacity: bytes / 8)
        for i in 0..<(bytes / 8) { words[i] = g.next() }
        // Finite, small scales: random f16 bits could be NaN or subnormal, which some CPUs slow on.
        let raw = data.assumingMemoryBound(to: UInt8.self)
        func scale(at offsets: [Int], every stride: Int) {
            for base in Swift.stride(from: 0, to: bytes, by: stride) {
                for o in offsets { raw[base + o] = 0x00; raw[base + o + 1] = 0x20 }  // f16 ≈ 0.0078
            }
        }
        switch type {
        case CQ_Q8_0: scale(at: [0], every: 34)
        case CQ_Q4_0, CQ_IQ4_NL: scale(at: [0], every: 18)
        case CQ_Q4_K: scale(at: [0, 2], every: 144)
        case CQ_Q6_K: scale(at: [208], every: 210)
        default: break
        }
        let groups = group > 0 ? Int(rows) * Int(cols / group) : 0
        params = groups > 0 ? UnsafeMutablePointer<UInt16>.allocate(capacity: 2 * groups) : nil
        params?.initialize(repeating: 0x3C00, count: 2 * groups)  // bf16 ≈ 0.0078
        matrix = cq_matrix(type: type, rows: rows, cols: cols, row_bytes: rowBytes,
                           data: UnsafePointer(raw), scales: params.map { UnsafePointer($0) },
                           biases: params.map { UnsafePointer($0 + groups) }, group: group)
        act = UnsafeMutableRawPointer.allocate(byteCount: cq_activation_bytes(type, cols), alignment: 64)
        let x = (0..<Int(cols)).map { _ in g.nextFloat() - 0.5 }
        cq_quantize_activation(type, x, cols, act)
    }

    deinit {
        data.deallocate()
        params?.deallocate()
        act.deallocate()
    }

    /// Best weights per second of whole-matrix matvecs into a scratch vector.
    func weightsPerSecond(time: (() -> Void) -> Double) -> Double {
        var y = [Float](repeating: 0, count: Int(rows))
        let s = time {
            y.withUnsafeMutableBufferPointer { yp in cq_matvec_rows(&matrix, act, yp.baseAddress!, 0, rows, 0) }
        }
        return Double(rows) * Double(matrix.cols) / s
    }
}
