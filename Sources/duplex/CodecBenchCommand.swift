import ArgumentParser
import DuplexCore
import DuplexEngine
import Foundation

extension Codec {
    /// Streaming encode and decode, one 80 ms frame per call, as the engine runs them.
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time streaming encodeStep/decodeStep per 80 ms frame; heap allocations per frame; peak RSS.",
            discussion: """
                Heap allocations are counted by the executable's own malloc counter (every malloc/calloc/\
                realloc/memalign call on any thread), read around each encodeStep/decodeStep.
                """)
        @OptionGroup var model: MimiOptions
        @Option(help: "Timed frames.") var frames = 100
        @Option(help: "Untimed frames first (caches, page faults, OpenBLAS threads).") var warmup = 10
        @Option(name: [.customShort("n"), .long], help: "Codebooks.") var codebooks = 8
        @Flag(help: "Print JSON instead of a table.") var json = false
        @Flag(help: "Time every block (SEANet stages, transformers, resampling, quantizer).") var profile = false
        @OptionGroup var compute: ComputeOptions

        func run() throws {
            compute.apply()
            let mimi = try model.load(codebooks: codebooks)
            let fs = mimi.frameSize
            let total = frames + warmup
            let audio = SpeechLikeSignal.make(samples: total * fs, sampleRate: mimi.config.sampleRate)
            let state = mimi.makeState()
            let profiler = profile ? MimiProfile(stages: mimi.config.ratios.count) : nil
            let allocCount = Bench.allocationCounter()
            var codes = [Int32](repeating: 0, count: codebooks)
            var out = [Float](repeating: 0, count: fs)
            var encodeMs: [Double] = [], decodeMs: [Double] = []
            var encodeAllocs = 0, decodeAllocs = 0
            try audio.withUnsafeBufferPointer { x in
                try codes.withUnsafeMutableBufferPointer { c in
                    try out.withUnsafeMutableBufferPointer { y in
                        for f in 0..<total {
                            if f == warmup { state.profile = profiler }
                            let a0 = allocCount?() ?? 0
                            let t0 = MonotonicClock().now()
                            mimi.encodeStep(x.baseAddress! + f * fs, codes: c.baseAddress!, state: state)
                            let t1 = MonotonicClock().now()
                            let a1 = allocCount?() ?? 0
                            try mimi.decodeStep(c.baseAddress!, codebooks: codebooks, output: y.baseAddress!, state: state)
                            let t2 = MonotonicClock().now()
                            let a2 = allocCount?() ?? 0
                            guard f >= warmup else { continue }
                            encodeMs.append(Double(t1 - t0) / 1e6)
                            decodeMs.append(Double(t2 - t1) / 1e6)
                            encodeAllocs += a1 - a0
                            decodeAllocs += a2 - a1
                        }
                    }
                }
            }
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            let peakRSS = Double(usage.ru_maxrss) / 1024
            let frameMs = 1000 * Double(fs) / Double(mimi.config.sampleRate)
            let enc = Stats(encodeMs), dec = Stats(decodeMs)
            let both = Stats(zip(encodeMs, decodeMs).map { $0 + $1 })
            var result: [String: Any] = [
                "impl": "duplex", "threads": compute.resolvedThreads, "frames": frames, "codebooks": codebooks,
                "encode_ms": enc.dictionary, "decode_ms": dec.dictionary, "total_ms": both.dictionary,
                "real_time_factor": both.mean / frameMs, "peak_rss_mb": peakRSS,
                "allocs_per_frame": allocCount == nil ? NSNull() : ["encode": Double(encodeAllocs) / Double(frames),
                                                                    "decode": Double(decodeAllocs) / Double(frames)] as Any,
            ]
            if let profiler {
                var blocks: [[String: Any]] = []
                for (name, s) in zip(profiler.names, profiler.seconds) { blocks.append(["block": name, "ms": 1000 * s / Double(frames)]) }
                result["profile_ms"] = blocks
            }
            if json {
                print(try JSONOutput.line(result))
                return
            }
            print(String(format: "Mimi streaming, %d frames of %.0f ms, %d codebooks, %d thread(s)", frames, frameMs, codebooks,
                         compute.resolvedThreads))
            print("              mean     p50     p95     max   (ms per frame)")
            for (name, s) in [("encode", enc), ("decode", dec), ("total", both)] {
                print(name.padding(toLength: 10, withPad: " ", startingAt: 0)
                      + String(format: "%8.2f%8.2f%8.2f%8.2f", s.mean, s.p50, s.p95, s.max))
            }
            print(String(format: "real-time factor %.3f (compute / audio time)", both.mean / frameMs))
            if allocCount != nil {
                print(String(format: "heap allocations per frame: encode %.2f, decode %.2f", Double(encodeAllocs) / Double(frames),
                             Double(decodeAllocs) / Double(frames)))
            } else {
                print("heap allocations per frame: not counted")
            }
            print(String(format: "peak RSS %.1f MiB", peakRSS))
            if let profiler {
                print("\nper block (ms per frame)")
                for (name, s) in zip(profiler.names, profiler.seconds) {
                    print("  " + name.padding(toLength: 34, withPad: " ", startingAt: 0) + String(format: "%7.2f", 1000 * s / Double(frames)))
                }
            }
        }

        struct Stats {
            let mean, p50, p95, max: Double
            init(_ v: [Double]) {
                let s = v.sorted()
                mean = s.isEmpty ? 0 : s.reduce(0, +) / Double(s.count)
                p50 = s.isEmpty ? 0 : s[s.count / 2]
                p95 = s.isEmpty ? 0 : s[Swift.min(s.count - 1, Int(Double(s.count) * 0.95))]
                max = s.last ?? 0
            }
            var dictionary: [String: Double] { ["mean": mean, "p50": p50, "p95": p95, "max": max] }
        }

        /// The process-wide allocation count (CAllocCounter), switched on for the run.
        static func allocationCounter() -> (() -> Int)? {
            guard let counter = Allocations.counter else { return nil }
            Allocations.start()
            return { Int(counter()) }
        }
    }
}
