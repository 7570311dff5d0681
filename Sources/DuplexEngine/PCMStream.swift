import DuplexAudio
import Foundation
import Synchronization

/// Raw PCM on a file descriptor (stdin, a pipe, a file) as a frame source: s16le or f32le at any
/// rate, resampled to the model's 24 kHz. Read as fast as it comes (pipe, generate) or paced like
/// a live microphone (`realtime`). A trailing partial sample is counted in `trailingBytes` and
/// ignored; NaN/Inf float input becomes silence (it would poison the codec's state). At the end
/// of the input it adds up to `tailFrames` frames of silence, so the model's latency can be
/// flushed out (a `PCMStreamSink` with the same `PCMStreamLength` stops at the input's length).
public final class PCMStreamSource: FrameSource {
    private let fd: Int32
    private let format: SampleFormat
    private let resampler: Resampler?
    private let realtime: Bool
    private let clock: any FrameClock
    private var pacer = Pacer(.microphone)
    private let length: PCMStreamLength?
    private let cancelled = Atomic<Bool>(false)
    private var raw: [UInt8]
    private var carried = 0
    private var pipeSamples: [Float]
    /// Converted model-rate samples not handed out yet: [start, end).
    private var ready: [Float]
    private var readyStart = 0
    private var readyEnd = 0
    private var ended = false
    private var tailRemaining: Int
    private let chunkBytes = 1 << 15
    public private(set) var trailingBytes = 0

    public init(fd: Int32, format: SampleFormat = .s16le, rate: Int = 24_000, realtime: Bool = false,
                tailFrames: Int = 8, length: PCMStreamLength? = nil, clock: any FrameClock = MonotonicClock()) {
        self.fd = fd
        self.format = format
        self.realtime = realtime
        self.clock = clock
        self.length = length
        resampler = rate == 24_000 ? nil : Resampler(from: rate, to: 24_000)
        tailRemaining = tailFrames * 1920
        raw = [UInt8](repeating: 0, count: chunkBytes + 8)
        pipeSamples = [Float](repeating: 0, count: chunkBytes / 2 + 1)
        let perChunk = resampler?.maxOutput(forInput: pipeSamples.count) ?? pipeSamples.count
        ready = [Float](repeating: 0, count: 2 * perChunk + 4 * 1920 + 64)
    }

    public var pacing: SourcePacing { realtime ? .live : .asFastAsRead }

    /// Makes a blocked `read` give up within 50 ms (a live loop stopping). Any thread.
    public func cancel() { cancelled.store(true, ordering: .relaxed) }

    public func read(into buffer: UnsafeMutablePointer<Float>, count: Int) throws -> Bool {
        while readyEnd - readyStart < count && !ended {
            if try !fill() { break }
        }
        var available = readyEnd - readyStart
        if available < count {
            // End of input: silence completes the last frame and flushes the model's latency,
            // until the output is as long as the input was.
            guard available > 0 || (tailRemaining > 0 && length?.outputComplete != true) else { return false }
            let pad = count - available
            compact()
            ready.withUnsafeMutableBufferPointer { ($0.baseAddress! + readyEnd).update(repeating: 0, count: pad) }
            readyEnd += pad
            tailRemaining -= pad
            available = count
        }
        ready.withUnsafeBufferPointer { buffer.update(from: $0.baseAddress! + readyStart, count: count) }
        readyStart += count
        if realtime { pacer.pace(count, clock: clock) }
        return true
    }

    private func compact() {
        guard readyStart > 0 else { return }
        let n = readyEnd - readyStart
        ready.withUnsafeMutableBufferPointer { b in
            if n > 0 { memmove(b.baseAddress!, b.baseAddress! + readyStart, n * MemoryLayout<Float>.stride) }
        }
        readyStart = 0
        readyEnd = n
    }

    /// Reads one chunk; false at the end of the input (after flushing the resampler).
    private func fill() throws -> Bool {
        var got = 0
        while true {
            if cancelled.load(ordering: .relaxed) { ended = true; return false }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 50)
            if ready == 0 { continue }
            got = raw.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress! + carried, chunkBytes) }
            if got < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw PCMStreamError.read(String(cString: strerror(errno)))
            }
            break
        }
        compact()
        if got == 0 {
            ended = true
            trailingBytes = carried
            if let resampler {
                let n = ready.withUnsafeMutableBufferPointer { resampler.flush(into: $0.baseAddress! + readyEnd, capacity: $0.count - readyEnd) }
                readyEnd += n
            }
            length?.inputEnded = true
            return false
        }
        let bytesPerSample = format.bytesPerSample
        let available = carried + got
        let count = available / bytesPerSample
        raw.withUnsafeBytes { src in pipeSamples.withUnsafeMutableBufferPointer { format.decode(src, count: count, into: $0.baseAddress!) } }
        carried = available - count * bytesPerSample
        if carried > 0 { raw.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[(count * bytesPerSample)..<available])) } }
        length?.inputSamples += count
        if let resampler {
            let n = pipeSamples.withUnsafeBufferPointer { p in
                ready.withUnsafeMutableBufferPointer { r in
                    resampler.process(p.baseAddress!, count: count, into: r.baseAddress! + readyEnd, capacity: r.count - readyEnd)
                }
            }
            readyEnd += n
        } else {
            ready.withUnsafeMutableBufferPointer { ($0.baseAddress! + readyEnd).update(from: pipeSamples, count: count) }
            readyEnd += count
        }
        return true
    }
}

/// How much input a PCM stream carried, shared by its source and sink so the output can be
/// exactly as long as the input (one thread: the inline loop).
public final class PCMStreamLength {
    public var inputSamples = 0
    public var inputEnded = false
    public var outputSamples = 0
    public init() {}
    /// The input ended and as many samples went out as came in.
    public var outputComplete: Bool { inputEnded && outputSamples >= inputSamples }
}

/// Raw PCM to a file descriptor (stdout): s16le or f32le at any rate, resampled from 24 kHz.
/// With a `PCMStreamLength` it writes no more samples than the input had and reports `finished`
/// once it has written them all after the input ended. A reader that goes away (EPIPE) ends the
/// stream quietly (`readerGone`). `paced` makes it a speaker that plays in real time.
public final class PCMStreamSink: FrameSink {
    private let fd: Int32
    private let format: SampleFormat
    private let resampler: Resampler?
    private let length: PCMStreamLength?
    private let paced: Bool
    private let clock: any FrameClock
    private var samples: [Float]
    private var bytes: [UInt8]
    private var pacer = Pacer(.speaker)
    public private(set) var outputSamples = 0
    public private(set) var readerGone = false
    public private(set) var finished = false

    public init(fd: Int32, format: SampleFormat = .s16le, rate: Int = 24_000, length: PCMStreamLength? = nil,
                paced: Bool = false, clock: any FrameClock = MonotonicClock()) {
        self.fd = fd
        self.format = format
        self.length = length
        self.paced = paced
        self.clock = clock
        resampler = rate == 24_000 ? nil : Resampler(from: 24_000, to: rate)
        samples = [Float](repeating: 0, count: (resampler?.maxOutput(forInput: 1920 + 64) ?? 1920) + 8)
        bytes = [UInt8](repeating: 0, count: samples.count * format.bytesPerSample)
    }

    public var isPaced: Bool { paced }

    public func write(_ input: UnsafePointer<Float>, count: Int) throws -> Bool {
        guard !readerGone && !finished else { return false }
        if paced { pacer.pace(count, clock: clock) }
        var n = count
        if samples.count < count + 64 { samples = [Float](repeating: 0, count: count + 64); bytes = [UInt8](repeating: 0, count: samples.count * format.bytesPerSample) }
        if let resampler {
            n = samples.withUnsafeMutableBufferPointer { resampler.process(input, count: count, into: $0.baseAddress!, capacity: $0.count) }
        } else {
            samples.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: input, count: count) }
        }
        if let length, length.inputEnded { n = max(0, min(n, length.inputSamples - outputSamples)) }
        if n > 0 {
            bytes.withUnsafeMutableBytes { dst in samples.withUnsafeBufferPointer { format.encode($0.baseAddress!, count: n, into: dst) } }
            var written = 0
            let total = n * format.bytesPerSample
            while written < total {
                let w = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + written, total - written) }
                if w < 0 {
                    if errno == EINTR || errno == EAGAIN { continue }
                    if errno == EPIPE { readerGone = true; return false }
                    throw PCMStreamError.write(String(cString: strerror(errno)))
                }
                written += w
            }
            outputSamples += n
            length?.outputSamples = outputSamples
        }
        if let length, length.inputEnded, outputSamples >= length.inputSamples {
            finished = true
            return false
        }
        return true
    }
}

/// A PCM stream's file descriptor failed.
public enum PCMStreamError: Error, CustomStringConvertible {
    case read(String)
    case write(String)
    public var description: String {
        switch self {
        case .read(let m): "cannot read input: \(m)"
        case .write(let m): "cannot write output: \(m)"
        }
    }
}
