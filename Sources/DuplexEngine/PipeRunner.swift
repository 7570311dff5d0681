import DuplexAudio
import Foundation

/// Raw PCM in, raw PCM out, streaming: each input frame is answered as soon as it has been read,
/// so output starts long before input ends. The output has exactly as many samples as the input
/// (the engine's latency shows as leading silence; the tail is flushed at end of input).
public final class PipeRunner {
    public struct Options: Sendable {
        public var format: SampleFormat = .s16le
        /// Sample rate of the pipe (both directions); the model runs at 24 kHz.
        public var rate = 24_000
        /// Pace input as a live microphone would (one frame per 80 ms) instead of flat out.
        public var realtime = false
        public init() {}
    }

    public struct Summary: Sendable, Equatable {
        public var inputSamples = 0
        public var outputSamples = 0
        public var frames = 0
        /// Bytes at the end of input that did not make a whole sample (warned about, ignored).
        public var trailingBytes = 0
        /// The reader of our output went away; we stopped quietly.
        public var outputClosed = false
    }

    public enum Failure: Error, CustomStringConvertible {
        case read(String)
        case write(String)
        public var description: String {
            switch self {
            case .read(let m): "cannot read input: \(m)"
            case .write(let m): "cannot write output: \(m)"
            }
        }
    }

    private let processor: FrameProcessor
    private let options: Options
    private let clock: any FrameClock
    private let modelRate = 24_000
    private let frameSize: Int
    /// Called for each text token with the time (seconds of input) of the frame that carried it.
    private let onText: (Int32, Double) -> Void

    public init(processor: FrameProcessor, options: Options, clock: any FrameClock = MonotonicClock(),
                onText: @escaping (Int32, Double) -> Void = { _, _ in }) {
        self.processor = processor
        self.options = options
        self.clock = clock
        self.onText = onText
        frameSize = processor.frameSize
    }

    public func run(input: Int32, output: Int32) throws -> Summary {
        var summary = Summary()
        let bytesPerSample = options.format.bytesPerSample
        let resampleIn = options.rate == modelRate ? nil : Resampler(from: options.rate, to: modelRate)
        let resampleOut = options.rate == modelRate ? nil : Resampler(from: modelRate, to: options.rate)

        let chunkBytes = 1 << 15
        var raw = [UInt8](repeating: 0, count: chunkBytes + 4)
        var carried = 0                                      // bytes of an incomplete sample
        var pipeSamples = [Float](repeating: 0, count: chunkBytes / 2 + 1)
        var modelSamples = [Float](repeating: 0, count: (resampleIn?.maxOutput(forInput: pipeSamples.count) ?? pipeSamples.count) + 8)
        var frame = [Float](repeating: 0, count: frameSize)
        var frameFill = 0
        var answer = [Float](repeating: 0, count: frameSize)
        var outSamples = [Float](repeating: 0, count: (resampleOut?.maxOutput(forInput: frameSize + 64) ?? frameSize) + 8)
        var outBytes = [UInt8](repeating: 0, count: outSamples.count * bytesPerSample)
        var stamps = FrameTimestamps()
        let start = clock.now()
        let frameNanoseconds = UInt64(frameSize) * 1_000_000_000 / UInt64(modelRate)

        // Writes `count` pipe-rate samples, never more than the input had in total.
        func emit(_ samples: UnsafePointer<Float>, _ count: Int, limit: Int) throws -> Bool {
            let n = max(0, min(count, limit - summary.outputSamples))
            guard n > 0 else { return true }
            outBytes.withUnsafeMutableBytes { dst in
                switch options.format {
                case .s16le:
                    for i in 0..<n { dst.storeBytes(of: PCM.int16(from: samples[i]).littleEndian, toByteOffset: 2 * i, as: Int16.self) }
                case .f32le:
                    for i in 0..<n { dst.storeBytes(of: samples[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
                }
            }
            var written = 0
            let total = n * bytesPerSample
            while written < total {
                let w = outBytes.withUnsafeBytes { Foundation.write(output, $0.baseAddress! + written, total - written) }
                if w < 0 {
                    if errno == EINTR { continue }
                    if errno == EPIPE { summary.outputClosed = true; return false }
                    throw Failure.write(String(cString: strerror(errno)))
                }
                written += w
            }
            summary.outputSamples += n
            return true
        }

        // Runs the model on the buffered frame and writes its answer.
        func processFrame(limit: Int) throws -> Bool {
            if options.realtime {
                // A live microphone delivers frame k's last sample at start + (k + 1)·80 ms.
                let due = start + UInt64(summary.frames + 1) * frameNanoseconds
                let now = clock.now()
                if due > now { usleep(UInt32((due - now) / 1000)) }
            }
            stamps = FrameTimestamps()
            stamps.dequeued = clock.now()
            let token = frame.withUnsafeBufferPointer { f in
                answer.withUnsafeMutableBufferPointer { a in
                    processor.process(f.baseAddress!, output: a.baseAddress!, stamps: &stamps, clock: clock)
                }
            }
            if let token { onText(token, Double(summary.frames * frameSize) / Double(modelRate)) }
            summary.frames += 1
            frameFill = 0
            if let resampleOut {
                let n = answer.withUnsafeBufferPointer { a in
                    outSamples.withUnsafeMutableBufferPointer { o in
                        resampleOut.process(a.baseAddress!, count: frameSize, into: o.baseAddress!, capacity: o.count)
                    }
                }
                return try outSamples.withUnsafeBufferPointer { try emit($0.baseAddress!, n, limit: limit) }
            }
            return try answer.withUnsafeBufferPointer { try emit($0.baseAddress!, frameSize, limit: limit) }
        }

        // Appends model-rate samples to the frame buffer, processing every frame completed.
        func feed(_ samples: UnsafePointer<Float>, _ count: Int, limit: Int) throws -> Bool {
            var offset = 0
            while offset < count {
                let n = min(count - offset, frameSize - frameFill)
                frame.withUnsafeMutableBufferPointer { f in (f.baseAddress! + frameFill).update(from: samples + offset, count: n) }
                frameFill += n
                offset += n
                if frameFill == frameSize, try !processFrame(limit: limit) { return false }
            }
            return true
        }

        var open = true
        readLoop: while open {
            let got = raw.withUnsafeMutableBytes { Foundation.read(input, $0.baseAddress! + carried, chunkBytes) }
            if got < 0 {
                if errno == EINTR { continue }
                throw Failure.read(String(cString: strerror(errno)))
            }
            if got == 0 { break }
            let available = carried + got
            let count = available / bytesPerSample
            raw.withUnsafeBytes { src in
                for i in 0..<count {
                    switch options.format {
                    case .s16le:
                        pipeSamples[i] = PCM.float(from: Int16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)))
                    case .f32le:
                        let v = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                        pipeSamples[i] = v.isFinite ? v : 0   // NaN/Inf would poison the codec state
                    }
                }
            }
            carried = available - count * bytesPerSample
            if carried > 0 { raw.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[(count * bytesPerSample)..<available])) } }
            summary.inputSamples += count
            // While input is still coming, no output limit applies beyond what was read.
            let limit = Int.max
            if let resampleIn {
                let n = pipeSamples.withUnsafeBufferPointer { p in
                    modelSamples.withUnsafeMutableBufferPointer { m in
                        resampleIn.process(p.baseAddress!, count: count, into: m.baseAddress!, capacity: m.count)
                    }
                }
                open = try modelSamples.withUnsafeBufferPointer { try feed($0.baseAddress!, n, limit: limit) }
            } else {
                open = try pipeSamples.withUnsafeBufferPointer { try feed($0.baseAddress!, count, limit: limit) }
            }
            if !open { break readLoop }
        }
        summary.trailingBytes = carried
        guard open else { return summary }

        // End of input: push out the resampler's tail, then silence, until the output is as long
        // as the input was.
        let total = summary.inputSamples
        if let resampleIn {
            let n = modelSamples.withUnsafeMutableBufferPointer { resampleIn.flush(into: $0.baseAddress!, capacity: $0.count) }
            guard try modelSamples.withUnsafeBufferPointer({ try feed($0.baseAddress!, n, limit: total) }) else { return summary }
        }
        // Each silent frame yields a frame of output; a few cover the resamplers' lookahead.
        let silence = [Float](repeating: 0, count: frameSize)
        var extraFrames = 0
        while summary.outputSamples < total && extraFrames < 8 {
            let need = frameSize - frameFill
            guard try silence.withUnsafeBufferPointer({ try feed($0.baseAddress!, need, limit: total) }) else { return summary }
            extraFrames += 1
        }
        return summary
    }
}
