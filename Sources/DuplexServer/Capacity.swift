import DuplexEngine
import Foundation

/// How many conversations this machine keeps in real time: the default for `--max-sessions`.
public enum ServerCapacity {
    public struct Estimate: Sendable {
        /// Median wall time of one frame through a fresh session (model step + nothing else).
        public var frameSeconds: Double
        public var sessions: Int
    }

    /// Sessions that fit in one frame's duration, keeping `headroom` of it for everything else
    /// (Opus, the network, the scheduler). Concurrent sessions share the cores a single step
    /// already uses, so throughput, not core count, is the limit. Never less than 1.
    public static func sessions(frameSeconds: Double, frameDuration: Double, headroom: Double = 0.8) -> Int {
        guard frameSeconds > 0, frameSeconds.isFinite else { return 1 }
        return max(1, Int((headroom * frameDuration / frameSeconds).rounded(.down)))
    }

    /// Runs `frames` frames of silence through a fresh session (the first `warmup` untimed) and
    /// estimates the capacity from the median time per frame.
    public static func measure(_ model: ChatModel, frames: Int = 12, warmup: Int = 4) throws -> Estimate {
        let processor = try model.makeSession(SessionParameters())
        let n = model.frameSize
        let input = [Float](repeating: 0, count: n)
        var output = [Float](repeating: 0, count: n)
        let clock = MonotonicClock()
        var times: [Double] = []
        for i in 0..<(warmup + max(1, frames)) {
            var stamps = FrameTimestamps()
            let start = clock.now()
            input.withUnsafeBufferPointer { inp in
                output.withUnsafeMutableBufferPointer { out in
                    _ = processor.process(inp.baseAddress!, output: out.baseAddress!, stamps: &stamps, clock: clock)
                }
            }
            if i >= warmup { times.append(Double(clock.now() - start) / 1e9) }
        }
        let median = times.sorted()[times.count / 2]
        let frameDuration = Double(n) / Double(model.sampleRate)
        return Estimate(frameSeconds: median, sessions: sessions(frameSeconds: median, frameDuration: frameDuration))
    }
}
