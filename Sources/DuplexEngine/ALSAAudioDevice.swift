import DuplexAudio
import Foundation
import Synchronization

/// A full-duplex sound card for the live runner: ALSA capture and playback, converted to and
/// from the model's 24 kHz mono (downmixing, resampling) when the device insists on something
/// else. Each direction is used by its own thread; nothing here locks or allocates per period.
public final class ALSAAudioDevice: LiveRunner.Device, @unchecked Sendable {
    public let capture: ALSADevice
    public let playback: ALSADevice
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
    /// What the microphone heard and the speaker played, at 24 kHz, for `--record` (drained by
    /// the UI thread; when it falls behind, samples are dropped, never waited for).
    private var recordUser: SPSCRing<Float>?
    private var recordSystem: SPSCRing<Float>?
    /// Peak levels of the last period (0…1), for meters; written by the device threads.
    private let inputLevelBits = Atomic<UInt32>(0)
    private let outputLevelBits = Atomic<UInt32>(0)

    public init(input: String, output: String, periodFrames: Int = 240, configuration: String? = nil) throws {
        var captureRequest = ALSADevice.Request(name: input, direction: .capture)
        captureRequest.periodFrames = periodFrames
        var playbackRequest = ALSADevice.Request(name: output, direction: .playback)
        playbackRequest.periodFrames = periodFrames
        capture = try ALSADevice(captureRequest, configuration: configuration)
        playback = try ALSADevice(playbackRequest, configuration: configuration)
        inResampler = capture.sampleRate == modelRate ? nil : Resampler(from: capture.sampleRate, to: modelRate)
        outResampler = playback.sampleRate == modelRate ? nil : Resampler(from: modelRate, to: playback.sampleRate)
        let maxDevicePeriod = max(capture.periodFrames, playback.periodFrames) * 4 + 8192
        captureRaw = [Int16](repeating: 0, count: maxDevicePeriod * max(1, capture.channels))
        captureMono = [Float](repeating: 0, count: maxDevicePeriod)
        captureResampled = [Float](repeating: 0, count: maxDevicePeriod * 2 + 64)
        captureBacklog = [Float](repeating: 0, count: maxDevicePeriod * 4 + 64)
        playResampled = [Float](repeating: 0, count: maxDevicePeriod * 4 + 64)
        playRaw = [Int16](repeating: 0, count: maxDevicePeriod * 4 * max(1, playback.channels))
    }

    /// Starts keeping what is captured and played (call before the device threads start).
    public func enableRecording(seconds: Int = 10) {
        recordUser = SPSCRing(minimumCapacity: seconds * modelRate, zero: 0)
        recordSystem = SPSCRing(minimumCapacity: seconds * modelRate, zero: 0)
    }

    /// Moves recorded samples into the caller's arrays (user = microphone, system = speaker).
    public func drainRecording(user: inout [Float], system: inout [Float]) {
        var chunk = [Float](repeating: 0, count: 4096)
        for (ring, isUser) in [(recordUser, true), (recordSystem, false)] {
            guard let ring else { continue }
            while true {
                let n = chunk.withUnsafeMutableBufferPointer { ring.read(into: $0.baseAddress!, count: $0.count) }
                if n == 0 { break }
                if isUser { user.append(contentsOf: chunk[0..<n]) } else { system.append(contentsOf: chunk[0..<n]) }
            }
        }
    }

    public var inputLevel: Float { Float(bitPattern: inputLevelBits.load(ordering: .relaxed)) }
    public var outputLevel: Float { Float(bitPattern: outputLevelBits.load(ordering: .relaxed)) }
    public var xruns: (capture: Int, playback: Int) { (capture.xruns, playback.xruns) }

    /// Fills exactly `frames` model-rate samples, reading the device as often as needed.
    public func capture(into buffer: UnsafeMutablePointer<Float>, frames: Int) throws -> Bool {
        while backlogCount < frames {
            let deviceFrames = capture.periodFrames
            let result = try captureRaw.withUnsafeMutableBufferPointer { try capture.read(into: $0.baseAddress!, frames: deviceFrames) }
            guard case .frames(let n) = result, n > 0 else { return false }
            let channels = capture.channels
            var peak: Float = 0
            captureRaw.withUnsafeBufferPointer { raw in
                for i in 0..<n {
                    var s: Float = 0
                    for c in 0..<channels { s += PCM.float(from: raw[i * channels + c]) }
                    s /= Float(channels)
                    captureMono[i] = s
                    peak = max(peak, abs(s))
                }
            }
            inputLevelBits.store(peak.bitPattern, ordering: .relaxed)
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
        if let recordUser { captureBacklog.withUnsafeBufferPointer { _ = recordUser.write($0.baseAddress!, count: frames) } }
        captureBacklog.withUnsafeMutableBufferPointer { b in
            buffer.update(from: b.baseAddress!, count: frames)
            memmove(b.baseAddress!, b.baseAddress! + frames, (backlogCount - frames) * MemoryLayout<Float>.stride)
        }
        backlogCount -= frames
        return true
    }

    /// Plays `frames` model-rate samples (blocks on the device, never on the model).
    public func play(_ buffer: UnsafePointer<Float>, frames: Int) throws {
        var peak: Float = 0
        for i in 0..<frames { peak = max(peak, abs(buffer[i])) }
        outputLevelBits.store(peak.bitPattern, ordering: .relaxed)
        recordSystem?.write(buffer, count: frames)
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
    }

    public var outputDelay: UInt64 {
        UInt64(max(0, playback.delayFrames)) * 1_000_000_000 / UInt64(playback.sampleRate)
    }
}
