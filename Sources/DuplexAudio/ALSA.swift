import CALSA
import Foundation

/// A device problem a user can act on: which device, what ALSA said.
public struct AudioDeviceError: Error, CustomStringConvertible, Sendable {
    public let device: String
    public let message: String
    public init(device: String, message: String) {
        self.device = device
        self.message = message
    }
    public var description: String { "audio device \"\(device)\": \(message)" }
}

private func alsaMessage(_ code: Int32) -> String { String(cString: snd_strerror(code)) }

/// One ALSA PCM, interleaved signed 16-bit, negotiated as close to what the engine wants as the
/// device allows (24 kHz mono); the caller resamples/downmixes when the device insists on more.
/// Reads and writes block on the device only — they run on the audio threads, never the model's.
/// Xruns are recovered with `snd_pcm_recover` and counted, never fatal.
public final class ALSADevice: @unchecked Sendable {
    public enum Direction: Sendable { case capture, playback }

    public struct Request: Sendable {
        public var name: String
        public var direction: Direction
        public var sampleRate: Int = 24_000
        public var channels: Int = 1
        /// Frames per period (default 20 ms at 24 kHz) and periods in the device buffer.
        public var periodFrames: Int = 480
        public var periods: Int = 4

        public init(name: String, direction: Direction) {
            self.name = name
            self.direction = direction
        }
    }

    public let name: String
    public let direction: Direction
    public let sampleRate: Int
    public let channels: Int
    public let periodFrames: Int
    public let bufferFrames: Int
    /// Underruns (playback) or overruns (capture) recovered so far. Written by the device thread.
    public private(set) var xruns = 0
    private let pcm: OpaquePointer
    private var config: OpaquePointer?

    /// Opens `request.name`. `configuration`, when given, is ALSA configuration text whose PCM
    /// definitions are used instead of the system's (tests use the `file` and `null` plugins).
    public init(_ request: Request, configuration: String? = nil) throws {
        name = request.name
        direction = request.direction
        let stream = request.direction == .capture ? SND_PCM_STREAM_CAPTURE : SND_PCM_STREAM_PLAYBACK
        var handle: OpaquePointer?
        var rc: Int32
        if let configuration {
            var top: OpaquePointer?
            rc = snd_config_top(&top)
            var input: OpaquePointer?
            if rc >= 0 {
                rc = configuration.withCString { snd_input_buffer_open(&input, $0, Int(strlen($0))) }
            }
            if rc >= 0 { rc = snd_config_load(top, input); snd_input_close(input) }
            guard rc >= 0 else {
                if let top { snd_config_delete(top) }
                throw AudioDeviceError(device: request.name, message: "bad ALSA configuration: \(alsaMessage(rc))")
            }
            config = top
            rc = snd_pcm_open_lconf(&handle, request.name, stream, 0, top)
        } else {
            rc = snd_pcm_open(&handle, request.name, stream, 0)
        }
        guard rc >= 0, let handle else {
            if let config { snd_config_delete(config) }
            throw AudioDeviceError(device: request.name, message: "cannot open for \(request.direction == .capture ? "capture" : "playback"): \(alsaMessage(rc)) (see `duplex devices`)")
        }
        pcm = handle

        var hw: OpaquePointer?
        snd_pcm_hw_params_malloc(&hw)
        defer { snd_pcm_hw_params_free(hw) }
        func check(_ code: Int32, _ what: String) throws {
            if code < 0 {
                snd_pcm_close(handle)
                throw AudioDeviceError(device: request.name, message: "\(what): \(alsaMessage(code))")
            }
        }
        try check(snd_pcm_hw_params_any(pcm, hw), "no configurations available")
        try check(snd_pcm_hw_params_set_access(pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED), "interleaved access not supported")
        try check(snd_pcm_hw_params_set_format(pcm, hw, SND_PCM_FORMAT_S16_LE), "16-bit little-endian samples not supported")
        var channelCount = UInt32(request.channels)
        try check(snd_pcm_hw_params_set_channels_near(pcm, hw, &channelCount), "cannot set \(request.channels) channel(s)")
        var rate = UInt32(request.sampleRate)
        var dir: Int32 = 0
        try check(snd_pcm_hw_params_set_rate_near(pcm, hw, &rate, &dir), "cannot set a sample rate near \(request.sampleRate) Hz")
        // Keep the period in time, not frames, when the device runs at another rate.
        var period = snd_pcm_uframes_t(max(32, request.periodFrames * Int(rate) / request.sampleRate))
        try check(snd_pcm_hw_params_set_period_size_near(pcm, hw, &period, &dir), "cannot set the period size")
        var buffer = snd_pcm_uframes_t(Int(period) * max(2, request.periods))
        try check(snd_pcm_hw_params_set_buffer_size_near(pcm, hw, &buffer), "cannot set the buffer size")
        try check(snd_pcm_hw_params(pcm, hw), "cannot apply hardware parameters")
        snd_pcm_hw_params_get_period_size(hw, &period, &dir)
        snd_pcm_hw_params_get_buffer_size(hw, &buffer)
        sampleRate = Int(rate)
        channels = Int(channelCount)
        periodFrames = Int(period)
        bufferFrames = Int(buffer)
        try check(snd_pcm_prepare(pcm), "cannot prepare")
    }

    deinit {
        snd_pcm_close(pcm)
        if let config { snd_config_delete(config) }
    }

    public enum Transfer: Equatable, Sendable {
        /// Frames moved (may be fewer than asked at the end of a file-backed capture).
        case frames(Int)
        /// The stream ended (capture from a finished source).
        case endOfStream
    }

    /// Capture: reads up to `frames` interleaved frames, recovering from overruns.
    public func read(into buffer: UnsafeMutablePointer<Int16>, frames: Int) throws -> Transfer {
        var done = 0
        while done < frames {
            let n = snd_pcm_readi(pcm, buffer + done * channels, snd_pcm_uframes_t(frames - done))
            if n >= 0 {
                if n == 0 { return done == 0 ? .endOfStream : .frames(done) }
                done += Int(n)
                continue
            }
            let code = Int32(n)
            if code == -EAGAIN { continue }
            if code == -EIO || code == -ENODATA { return done == 0 ? .endOfStream : .frames(done) }
            try recover(code)
        }
        return .frames(done)
    }

    /// Playback: writes `frames` interleaved frames, recovering from underruns.
    public func write(_ buffer: UnsafePointer<Int16>, frames: Int) throws -> Transfer {
        var done = 0
        while done < frames {
            let n = snd_pcm_writei(pcm, buffer + done * channels, snd_pcm_uframes_t(frames - done))
            if n >= 0 {
                done += Int(n)
                continue
            }
            let code = Int32(n)
            if code == -EAGAIN { continue }
            try recover(code)
        }
        return .frames(done)
    }

    /// Frames queued in the device (playback: not yet played; capture: not yet read).
    public var delayFrames: Int {
        var delay: snd_pcm_sframes_t = 0
        return snd_pcm_delay(pcm, &delay) >= 0 ? Int(delay) : 0
    }

    /// Lets queued playback finish.
    public func drain() { snd_pcm_drain(pcm) }

    private func recover(_ code: Int32) throws {
        if code == -EPIPE || code == -ESTRPIPE { xruns += 1 }
        let rc = snd_pcm_recover(pcm, code, 1)
        if rc < 0 {
            throw AudioDeviceError(device: name, message: "\(direction == .capture ? "capture" : "playback") failed: \(alsaMessage(code))")
        }
    }
}

/// A PCM as `arecord -L` / `aplay -L` list it.
public struct ALSADeviceHint: Sendable, Equatable {
    public var name: String
    public var description: String
    public var capture: Bool
    public var playback: Bool
}

extension ALSADevice {
    /// Every PCM ALSA knows (hints), with whether it does capture and/or playback.
    public static func list() -> [ALSADeviceHint] {
        var hints: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
        guard snd_device_name_hint(-1, "pcm", &hints) >= 0, let hints else { return [] }
        defer { snd_device_name_free_hint(hints) }
        var out: [ALSADeviceHint] = []
        var i = 0
        while let hint = hints[i] {
            func field(_ key: String) -> String? {
                guard let p = snd_device_name_get_hint(hint, key) else { return nil }
                defer { free(p) }
                return String(cString: p)
            }
            if let name = field("NAME") {
                let io = field("IOID")
                out.append(ALSADeviceHint(name: name, description: field("DESC") ?? "",
                                          capture: io == nil || io == "Input", playback: io == nil || io == "Output"))
            }
            i += 1
        }
        return out
    }
}
