import CAudioProcessing
import Foundation
import Synchronization

/// Which echo canceller cleans the microphone before the model hears it.
public enum EchoCanceller: String, CaseIterable, Sendable {
    /// WebRTC's audio processing module (what PulseAudio's and PipeWire's echo-cancel use):
    /// finds the echo's delay itself, strongest suppression; noise suppression, high-pass and gain
    /// control come with it.
    case webrtc
    /// SpeexDSP's MDF canceller: lighter, no delay estimation (its filter must span the echo's
    /// delay and tail), gentler residual-echo suppression.
    case speex
    case off
}

/// What runs on the captured audio, resolved from the command line's `--aec/--ns/--agc`.
public struct CaptureProcessingOptions: Sendable, Equatable {
    public var echoCanceller: EchoCanceller
    public var noiseSuppression: Bool
    public var gainControl: Bool
    /// An 80 Hz high-pass (WebRTC's): rumble and DC never reach the canceller or the model.
    public var highPass: Bool
    /// The echo tail SpeexDSP's adaptive filter spans after the estimated delay: the room's
    /// reverberation (measured best overall at 200 ms over RT60s of 200–600 ms: longer filters
    /// converge slower, shorter ones miss the tail).
    public var speexFilterMilliseconds: Int
    /// WebRTC estimates the remaining delay itself (its delay-agnostic mode) instead of duplex's
    /// estimator aligning the streams (measured: its estimates are a few ms off, 20 dB lost).
    public var delayAgnostic: Bool
    /// The longest speaker-to-microphone delay (beyond what the devices report) looked for.
    public var maxEchoDelaySeconds: Double

    /// nil: the backend's default. Noise suppression is on with both (SpeexDSP's residual-echo
    /// suppressor only acts inside its denoiser: without it SpeexDSP's ERLE falls from 20–27 dB
    /// to 15–18 dB in the simulated rooms); gain control and the high-pass are WebRTC's (SpeexDSP
    /// has no high-pass, and its AGC pumps the residual echo up between words).
    public init(echoCanceller: EchoCanceller, noiseSuppression: Bool? = nil, gainControl: Bool? = nil, highPass: Bool? = nil,
                delayAgnostic: Bool = false, speexFilterMilliseconds: Int = 200, maxEchoDelaySeconds: Double = 0.5) {
        self.echoCanceller = echoCanceller
        let webrtc = echoCanceller == .webrtc
        self.noiseSuppression = noiseSuppression ?? (echoCanceller != .off)
        self.gainControl = gainControl ?? webrtc
        self.highPass = highPass ?? webrtc
        self.speexFilterMilliseconds = speexFilterMilliseconds
        self.delayAgnostic = delayAgnostic
        self.maxEchoDelaySeconds = maxEchoDelaySeconds
    }

    public static let off = CaptureProcessingOptions(echoCanceller: .off)

    /// Nothing to do: the microphone goes to the model untouched.
    public var isIdentity: Bool { echoCanceller == .off && !noiseSuppression && !gainControl && !highPass }

    /// Which library does the work: noise suppression and gain control without a canceller run
    /// in WebRTC's module.
    public var library: EchoCanceller {
        echoCanceller != .off ? echoCanceller : (isIdentity ? .off : .webrtc)
    }

    /// "webrtc aec + ns + agc + high-pass", for status lines and reports.
    public var summary: String {
        if isIdentity { return "off" }
        var parts: [String] = []
        if echoCanceller != .off { parts.append("\(echoCanceller.rawValue) aec") } else { parts.append("webrtc") }
        if noiseSuppression { parts.append("ns") }
        if gainControl { parts.append("agc") }
        if highPass { parts.append("high-pass") }
        return parts.joined(separator: " + ")
    }
}

/// Why the capture processing could not start: the caller falls back to none, with this message.
public struct CaptureProcessingError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Figures the capture thread publishes for the UI and reports: written by the processing thread,
/// read by any, never waited on.
public final class CaptureProcessingStatus: Sendable {
    private let erleBits = Atomic<UInt32>(Float.nan.bitPattern)
    private let libraryErleBits = Atomic<UInt32>(Float.nan.bitPattern)
    private let delayBits = Atomic<Int>(-1)
    private let chunkCount = Atomic<Int>(0)
    private let nanoseconds = Atomic<UInt64>(0)
    private let nonFiniteCount = Atomic<Int>(0)
    private let failureCode = Atomic<Int32>(0)
    private let settledBits = Atomic<UInt32>(Float.nan.bitPattern)

    public init() {}

    /// Echo return loss enhancement (dB) over the last seconds in which the far end played:
    /// microphone power over cleaned power. Double talk lowers it (the near voice is kept).
    public var erleDecibels: Float { Float(bitPattern: erleBits.load(ordering: .relaxed)) }
    /// WebRTC's own ERLE estimate (NaN for SpeexDSP, or before WebRTC has one).
    public var libraryErleDecibels: Float { Float(bitPattern: libraryErleBits.load(ordering: .relaxed)) }
    /// The canceller's estimate of the echo's delay after alignment (ms), −1 before it has one.
    public var echoDelayMilliseconds: Int { delayBits.load(ordering: .relaxed) }
    /// 10 ms chunks processed, and the time they took.
    public var chunks: Int { chunkCount.load(ordering: .relaxed) }
    public var processingNanoseconds: UInt64 { nanoseconds.load(ordering: .relaxed) }
    /// Non-finite input samples replaced by silence before the libraries saw them.
    public var nonFiniteSamples: Int { nonFiniteCount.load(ordering: .relaxed) }
    /// The library's last error code (0: none); the chunk then passed through unprocessed.
    public var lastErrorCode: Int32 { failureCode.load(ordering: .relaxed) }

    /// ERLE over everything after the first two seconds in which the far end played (the
    /// convergence the gate allows), NaN before.
    public var settledErleDecibels: Float { Float(bitPattern: settledBits.load(ordering: .relaxed)) }

    func publish(erle: Float, libraryErle: Float, delay: Int, settled: Float) {
        settledBits.store(settled.bitPattern, ordering: .relaxed)
        erleBits.store(erle.bitPattern, ordering: .relaxed)
        libraryErleBits.store(libraryErle.bitPattern, ordering: .relaxed)
        delayBits.store(delay, ordering: .relaxed)
    }

    func count(chunks: Int, nanoseconds elapsed: UInt64, nonFinite: Int) {
        chunkCount.add(chunks, ordering: .relaxed)
        nanoseconds.add(elapsed, ordering: .relaxed)
        if nonFinite > 0 { nonFiniteCount.add(nonFinite, ordering: .relaxed) }
    }

    func failed(_ code: Int32) { failureCode.store(code, ordering: .relaxed) }
}

/// A NUL-terminated message the C side wrote into `buffer`.
private func messageText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Echo cancellation, noise suppression, high-pass and gain control on one microphone stream,
/// with the loudspeaker's stream as the echo reference. The libraries work in 10 ms chunks; any
/// number of samples may come per call, and when calls are not whole chunks the output lags by
/// the least that keeps it continuous (once, at the start). One thread; nothing allocates or locks
/// after `init`.
public final class CaptureProcessor {
    public let options: CaptureProcessingOptions
    public let sampleRate: Int
    public let status = CaptureProcessingStatus()
    public let chunkFrames: Int
    private enum Backend {
        case webrtc(OpaquePointer)
        case speex(OpaquePointer)
    }
    private let backend: Backend
    // Chunk assembly and the output FIFO.
    private let nearChunk: UnsafeMutablePointer<Float>
    private let farChunk: UnsafeMutablePointer<Float>
    private let outChunk: UnsafeMutablePointer<Float>
    private var chunkFill = 0
    // The far end delayed by the estimated bulk delay (less a margin) before the canceller sees it.
    private var delayEstimator: EchoDelayEstimator
    private let farLine: UnsafeMutablePointer<Float>
    private let farLineMask: Int
    private var farLineWritten = 0
    /// Samples the far end is delayed by: the estimated echo delay less `alignmentMargin`.
    public private(set) var farShiftFrames = 0
    private var pendingShift: Int?
    private var estimatesDelay: Bool { options.echoCanceller != .off && !options.delayAgnostic }
    /// WebRTC's filter must start a little before the echo (measured: aligned exactly it loses
    /// 7 dB, 6 ms early nothing), and SpeexDSP's filter needs the direct path inside it too.
    public static let alignmentMarginSeconds = 0.008
    private let fifo: UnsafeMutablePointer<Float>
    private let fifoCapacity: Int
    private var fifoCount = 0
    /// Samples of silence put in front of the output so that it never runs dry: the processing's
    /// added latency.
    public private(set) var addedLatencyFrames = 0
    // The ERLE meter: powers while the far end plays, smoothed over about a second.
    private var micPower: Double = 0
    private var outPower: Double = 0
    private var meteredChunks = 0
    private var settledMic: Double = 0
    private var settledOut: Double = 0
    private var chunksSincePublish = 0
    private var lastDelay = -1

    public init(options: CaptureProcessingOptions, sampleRate: Int = 24_000) throws {
        precondition(!options.isIdentity, "no processing asked for: use the microphone as it is")
        self.options = options
        self.sampleRate = sampleRate
        var message = [CChar](repeating: 0, count: 512)
        switch options.library {
        case .webrtc:
            var o = dx_webrtc_options(echo_cancellation: options.echoCanceller == .webrtc ? 1 : 0,
                                      noise_suppression: options.noiseSuppression ? 1 : 0, gain_control: options.gainControl ? 1 : 0,
                                      high_pass: options.highPass ? 1 : 0, delay_agnostic: options.delayAgnostic ? 1 : 0)
            guard let handle = dx_webrtc_create(Int32(sampleRate), &o, &message, message.count) else {
                throw CaptureProcessingError(messageText(message))
            }
            backend = .webrtc(handle)
            chunkFrames = Int(dx_webrtc_chunk_frames(handle))
        case .speex:
            if options.highPass {
                throw CaptureProcessingError("the high-pass filter is WebRTC's: use --aec webrtc, or leave it off with speex")
            }
            let filter = options.speexFilterMilliseconds * sampleRate / 1000
            guard let handle = dx_speex_create(Int32(sampleRate), Int32(filter), 1, options.noiseSuppression ? 1 : 0,
                                               options.gainControl ? 1 : 0, &message, message.count) else {
                throw CaptureProcessingError(messageText(message))
            }
            backend = .speex(handle)
            chunkFrames = Int(dx_speex_chunk_frames(handle))
        case .off:
            preconditionFailure("unreachable: library is never off when processing is asked for")
        }
        delayEstimator = EchoDelayEstimator(sampleRate: sampleRate, maxDelaySeconds: options.maxEchoDelaySeconds)
        var lineSize = 1
        while lineSize < Int(options.maxEchoDelaySeconds * Double(sampleRate)) + 16384 + 64 { lineSize <<= 1 }
        farLine = .allocate(capacity: lineSize)
        farLine.initialize(repeating: 0, count: lineSize)
        farLineMask = lineSize - 1
        nearChunk = .allocate(capacity: chunkFrames)
        farChunk = .allocate(capacity: chunkFrames)
        outChunk = .allocate(capacity: chunkFrames)
        fifoCapacity = 1 << 16
        fifo = .allocate(capacity: fifoCapacity)
    }

    deinit {
        switch backend {
        case .webrtc(let h): dx_webrtc_destroy(h)
        case .speex(let h): dx_speex_destroy(h)
        }
        nearChunk.deallocate()
        farChunk.deallocate()
        outChunk.deallocate()
        fifo.deallocate()
        farLine.deallocate()
    }

    /// Whether the library can be loaded here (a missing one gives the reason).
    public static func check(_ library: EchoCanceller) -> CaptureProcessingError? {
        var message = [CChar](repeating: 0, count: 512)
        switch library {
        case .webrtc: return dx_webrtc_load(nil, &message, message.count) != 0 ? nil : CaptureProcessingError(messageText(message))
        case .speex: return dx_speex_load(nil, &message, message.count) != 0 ? nil : CaptureProcessingError(messageText(message))
        case .off: return nil
        }
    }

    /// The echo's delay beyond what the streams' alignment accounts for (samples), nil until the
    /// estimator is confident.
    public var echoDelayFrames: Int? { delayEstimator.delayFrames }
    /// Times the estimated echo delay changed after the first estimate (echo path changes).
    public var echoDelayChanges: Int { delayEstimator.changes }

    /// Cleans `count` microphone samples. `far` is what the loudspeaker played at the same
    /// instants (aligned by the caller: `EchoReference`); the delay the air and unreported
    /// buffers add is found here. `output` may be `near`. Calls of at most 16384 samples.
    public func process(near: UnsafePointer<Float>, far: UnsafePointer<Float>, count: Int, into output: UnsafeMutablePointer<Float>) {
        precondition(count <= 16384)
        let started = DispatchTime.now().uptimeNanoseconds
        var nonFinite = 0
        var chunks = 0
        var consumed = 0
        // Everything is read from `near` before `output` (which may alias it) is written.
        while consumed < count {
            let n = min(count - consumed, chunkFrames - chunkFill)
            if chunkFill == 0, let shift = pendingShift {
                // A new delay takes effect at a chunk boundary, wherever the calls split the
                // stream: the same input gives the same output.
                farShiftFrames = shift
                pendingShift = nil
                // SpeexDSP adapts from a wrong filter far slower than from none; WebRTC re-adapts.
                if case .speex(let h) = backend { dx_speex_reset_echo(h) }
            }
            if estimatesDelay, delayEstimator.push(far: far + consumed, near: near + consumed, count: n), let delay = delayEstimator.delayFrames {
                pendingShift = max(0, delay - Int(Self.alignmentMarginSeconds * Double(sampleRate)))
            }
            for i in 0..<n {
                var x = near[consumed + i], y = far[consumed + i]
                if !x.isFinite { x = 0; nonFinite += 1 }
                if !y.isFinite { y = 0; nonFinite += 1 }
                farLine[farLineWritten & farLineMask] = y
                nearChunk[chunkFill + i] = x
                farChunk[chunkFill + i] = farLineWritten >= farShiftFrames ? farLine[(farLineWritten - farShiftFrames) & farLineMask] : 0
                farLineWritten += 1
            }
            chunkFill += n
            consumed += n
            if chunkFill == chunkFrames {
                processChunk()
                chunkFill = 0
                chunks += 1
            }
        }
        if fifoCount < count {
            addedLatencyFrames += count - fifoCount
            memmove(fifo + (count - fifoCount), fifo, fifoCount * MemoryLayout<Float>.stride)
            fifo.update(repeating: 0, count: count - fifoCount)
            fifoCount = count
        }
        output.update(from: fifo, count: count)
        memmove(fifo, fifo + count, (fifoCount - count) * MemoryLayout<Float>.stride)
        fifoCount -= count
        status.count(chunks: chunks, nanoseconds: DispatchTime.now().uptimeNanoseconds - started, nonFinite: nonFinite)
    }

    private func processChunk() {
        let rc: Int32
        switch backend {
        case .webrtc(let h): rc = dx_webrtc_process(h, farChunk, nearChunk, outChunk, 0)
        case .speex(let h): rc = dx_speex_process(h, farChunk, nearChunk, outChunk)
        }
        if rc != 0 {
            // A refused chunk passes through as it was captured rather than as silence.
            status.failed(rc)
            outChunk.update(from: nearChunk, count: chunkFrames)
        }
        // The model hears full scale at most (WebRTC's gain can push clipped input past it), and
        // never NaN.
        for i in 0..<chunkFrames {
            let x = outChunk[i]
            outChunk[i] = x.isFinite ? max(-1, min(1, x)) : 0
        }
        (fifo + fifoCount).update(from: outChunk, count: chunkFrames)
        fifoCount += chunkFrames
        meter()
    }

    /// The ERLE meter and the published figures (every half second: SpeexDSP's delay estimate
    /// reads its whole filter).
    private func meter() {
        var far = 0.0, mic = 0.0, out = 0.0
        for i in 0..<chunkFrames {
            far += Double(farChunk[i] * farChunk[i])
            mic += Double(nearChunk[i] * nearChunk[i])
            out += Double(outChunk[i] * outChunk[i])
        }
        let n = Double(chunkFrames)
        // The far end counts as playing above −50 dBFS RMS.
        if far / n > 1e-5 {
            let a = 0.01   // about one second of 10 ms chunks
            micPower += a * (mic / n - micPower)
            outPower += a * (out / n - outPower)
            meteredChunks += 1
            if meteredChunks > 200 {
                settledMic += mic
                settledOut += out
            }
        }
        chunksSincePublish += 1
        guard chunksSincePublish >= 50 else { return }
        chunksSincePublish = 0
        var erle = Float.nan
        if meteredChunks >= 50 && micPower > 0 {
            erle = Float(10 * log10(micPower / max(outPower, micPower * 1e-10)))
        }
        var libraryErle = Float.nan
        switch backend {
        case .webrtc(let h):
            var m = dx_webrtc_metrics()
            dx_webrtc_read_metrics(h, &m)
            libraryErle = m.erle_db
            if m.delay_median_ms >= 0 { lastDelay = Int(m.delay_median_ms) }
        case .speex(let h):
            let lag = Int(dx_speex_echo_lag(h))
            if lag >= 0 { lastDelay = lag * 1000 / sampleRate }
        }
        // The echo's delay: duplex's estimate where it aligns the streams, else the library's.
        let delay = delayEstimator.delayFrames.map { $0 * 1000 / sampleRate } ?? lastDelay
        let settled = settledMic > 0 ? Float(10 * log10(settledMic / max(settledOut, settledMic * 1e-10))) : .nan
        status.publish(erle: erle, libraryErle: libraryErle, delay: delay, settled: settled)
    }
}
