import DuplexAudio
import Foundation

/// A full-duplex sound card as a frame source (capture) and sink (playback): ALSA converted to and
/// from the model's 24 kHz mono (downmixing, resampling) when the device insists on something
/// else. Each direction is used by its own thread; nothing here locks or allocates per period.
/// Without an output (`output: nil`, `duplex transcribe`) it only captures; writes are dropped.
public final class ALSAAudioDevice: FrameSource, FrameSink, @unchecked Sendable {
    public let capture: ALSADevice
    public let playback: ALSADevice?
    private let modelRate = 24_000
    private let inResampler: Resampler?
    private let outResampler: Resampler?
    // Capture-thread buffers.
    private var captureRaw: [Int16]
    private var captureMono: [Float]
    private var captureResampled: [Float]
    private var captureBacklog: [Float]
    private var backlogCount = 0
    // Playback-thread buffers.
    private var playResampled: [Float]
    private var playRaw: [Int16]

    public init(input: String, output: String?, periodFrames: Int = 240, configuration: String? = nil) throws {
        var captureRequest = ALSADevice.Request(name: input, direction: .capture)
        captureRequest.periodFrames = periodFrames
        capture = try ALSADevice(captureRequest, configuration: configuration)
        if let output {
            var playbackRequest = ALSADevice.Request(name: output, direction: .playback)
            playbackRequest.periodFrames = periodFrames
            playback = try ALSADevice(playbackRequest, configuration: configuration)
        } else {
            playback = nil
        }
        inResampler = capture.sampleRate == modelRate ? nil : Resampler(from: capture.sampleRate, to: modelRate)
        let rate = modelRate
        outResampler = playback.flatMap { $0.sampleRate == rate ? nil : Resampler(from: rate, to: $0.sampleRate) }
        let maxDevicePeriod = max(capture.periodFrames, playback?.periodFrames ?? 0) * 4 + 8192
        captureRaw = [Int16](repeating: 0, count: maxDevicePeriod * max(1, capture.channels))
        captureMono = [Float](repeating: 0, count: maxDevicePeriod)
        captureResampled = [Float](repeating: 0, count: maxDevicePeriod * 2 + 64)
        captureBacklog = [Float](repeating: 0, count: maxDevicePeriod * 4 + 64)
        playResampled = [Float](repeating: 0, count: maxDevicePeriod * 4 + 64)
        playRaw = [Int16](repeating: 0, count: maxDevicePeriod * 4 * max(1, playback?.channels ?? 1))
        self.periodFrames = periodFrames
    }

    /// Samples per period at 24 kHz: what the live loop reads and writes at a time.
    public let periodFrames: Int

    public var xruns: (capture: Int, playback: Int) { (capture.xruns, playback?.xruns ?? 0) }

    public var pacing: SourcePacing { .live }
    public var isPaced: Bool { playback != nil }

    /// Fills exactly `frames` model-rate samples, reading the device as often as needed; false
    /// when a finite capture (ALSA's file plugin) has ended.
    public func read(into buffer: UnsafeMutablePointer<Float>, count frames: Int) throws -> Bool {
        while backlogCount < frames {
            let deviceFrames = capture.periodFrames
            let result = try captureRaw.withUnsafeMutableBufferPointer { try capture.read(into: $0.baseAddress!, frames: deviceFrames) }
            guard case .frames(let n) = result, n > 0 else { return false }
            let channels = capture.channels
            captureRaw.withUnsafeBufferPointer { raw in
                for i in 0..<n {
                    var s: Float = 0
                    for c in 0..<channels { s += PCM.float(from: raw[i * channels + c]) }
                    captureMono[i] = s / Float(channels)
                }
            }
            let produced: Int
            if let inResampler {
                produced = captureMono.withUnsafeBufferPointer { m in
                    captureResampled.withUnsafeMutableBufferPointer { r in
                        inResampler.process(m.baseAddress!, count: n, into: r.baseAddress!, capacity: r.count)
                    }
                }
            } else {
                produced = n
                captureResampled.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: captureMono, count: n) }
            }
            let room = captureBacklog.count - backlogCount
            let take = min(room, produced)
            captureBacklog.withUnsafeMutableBufferPointer { $0.baseAddress!.advanced(by: backlogCount).update(from: captureResampled, count: take) }
            backlogCount += take
        }
        captureBacklog.withUnsafeMutableBufferPointer { b in
            buffer.update(from: b.baseAddress!, count: frames)
            memmove(b.baseAddress!, b.baseAddress! + frames, (backlogCount - frames) * MemoryLayout<Float>.stride)
        }
        backlogCount -= frames
        return true
    }

    /// Blocks until the playback buffer has a device period free (ALSA's own wait).
    public func waitUntilWritable(_ count: Int) { playback?.waitForRoom() }

    /// Plays `frames` model-rate samples (blocks on the device, never on the model).
    public func write(_ buffer: UnsafePointer<Float>, count frames: Int) throws -> Bool {
        guard let playback else { return true }
        let n: Int
        if let outResampler {
            n = playResampled.withUnsafeMutableBufferPointer { outResampler.process(buffer, count: frames, into: $0.baseAddress!, capacity: $0.count) }
        } else {
            n = frames
            playResampled.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: buffer, count: frames) }
        }
        let channels = playback.channels
        playRaw.withUnsafeMutableBufferPointer { raw in
            for i in 0..<n {
                let s = PCM.int16(from: playResampled[i])
                for c in 0..<channels { raw[i * channels + c] = s }
            }
        }
        _ = try playRaw.withUnsafeBufferPointer { try playback.write($0.baseAddress!, frames: n) }
        return true
    }

    public var outputDelay: UInt64 { reportedOutputDelay ?? 0 }

    public var reportedOutputDelay: UInt64? {
        guard let playback else { return 0 }
        return playback.reportedDelayFrames.map { UInt64($0) * 1_000_000_000 / UInt64(playback.sampleRate) }
    }

    /// What the device holds captured and not yet read, plus what this object holds converted
    /// and not yet handed out.
    public var captureDelay: UInt64? {
        guard let frames = capture.reportedDelayFrames else { return nil }
        return UInt64(frames) * 1_000_000_000 / UInt64(capture.sampleRate) + UInt64(backlogCount) * 1_000_000_000 / UInt64(modelRate)
    }
}
