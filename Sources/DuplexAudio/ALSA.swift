import CALSA
import Foundation
import Synchronization

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
    /// Frames a finite capture source holds: ALSA's `file` plugin reading a regular file
    /// (`infile`); nil for devices, which never end. alsa-lib's file plugin reports no end of its
    /// input file — past it, `snd_pcm_readi` keeps returning full counts of stale samples — so
    /// duplex measures the file when it opens the PCM and ends the stream there itself.
    public let sourceFrames: Int?
    /// Underruns (playback) or overruns (capture) recovered so far. Written by the device
    /// thread, read by any (the UI's status line).
    public var xruns: Int { xrunCount.load(ordering: .relaxed) }
    private let xrunCount = Atomic<Int>(0)
    /// Frames of `sourceFrames` not yet read (capture thread only).
    private var sourceFramesLeft: Int
    private let pcm: OpaquePointer
    private var config: OpaquePointer?

    /// Opens `request.name`. `configuration`, when given, is ALSA configuration text whose PCM
    /// definitions are used instead of the system's (tests use the `file` and `null` plugins).
    /// alsa-lib's own messages go into the error (see `AudioDeviceError.alsaDetail`), never to
    /// stderr.
    public init(_ request: Request, configuration: String? = nil) throws {
        ALSALibMessages.install()
        let mark = ALSALibMessages.mark()
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
                throw AudioDeviceError(device: request.name, message: "bad ALSA configuration: \(alsaMessage(rc))",
                                       kind: .cannotOpen, alsaDetail: ALSALibMessages.since(mark))
            }
            config = top
            rc = snd_pcm_open_lconf(&handle, request.name, stream, 0, top)
        } else {
            rc = snd_pcm_open(&handle, request.name, stream, 0)
        }
        guard rc >= 0, let handle else {
            if let config { snd_config_delete(config) }
            let what = request.direction == .capture ? "capture" : "playback"
            throw AudioDeviceError(device: request.name, message: "cannot open for \(what): \(alsaMessage(rc))\(Self.openHint(rc))",
                                   kind: .cannotOpen, alsaDetail: ALSALibMessages.since(mark))
        }
        pcm = handle

        var hw: OpaquePointer?
        snd_pcm_hw_params_malloc(&hw)
        defer { snd_pcm_hw_params_free(hw) }
        let config = config
        func check(_ code: Int32, _ what: String) throws {
            if code < 0 {
                snd_pcm_close(handle)
                if let config { snd_config_delete(config) }
                throw AudioDeviceError(device: request.name, message: "\(what): \(alsaMessage(code))",
                                       kind: .unsupported, alsaDetail: ALSALibMessages.since(mark))
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
        if request.direction == .capture, snd_pcm_type(handle) == SND_PCM_TYPE_FILE,
           let bytes = Self.fileSourceBytes(name: request.name, configuration: config) {
            sourceFrames = bytes / (2 * Int(channelCount))
        } else {
            sourceFrames = nil
        }
        sourceFramesLeft = sourceFrames ?? 0
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

    /// Capture: reads up to `frames` interleaved frames, recovering from overruns. The end of a
    /// finite source (`sourceFrames`, or a capture that ALSA drained) is `.endOfStream`; a device
    /// that went away or stopped working throws (`AudioDeviceError.Kind.disconnected`/`.failed`)
    /// rather than passing for silence.
    public func read(into buffer: UnsafeMutablePointer<Int16>, frames: Int) throws -> Transfer {
        let mark = ALSALibMessages.mark()
        var want = frames
        if sourceFrames != nil {
            if sourceFramesLeft == 0 { return .endOfStream }
            want = min(frames, sourceFramesLeft)
        }
        var done = 0
        while done < want {
            // The file plugin reads its input file only in pieces of at most its buffer.
            let ask = sourceFrames == nil ? want - done : min(want - done, bufferFrames)
            let n = snd_pcm_readi(pcm, buffer + done * channels, snd_pcm_uframes_t(ask))
            if n > 0 {
                done += Int(n)
                continue
            }
            if n == 0 { break }
            let code = Int32(n)
            if code == -EAGAIN { continue }
            try recover(code, since: mark)
        }
        if sourceFrames != nil { sourceFramesLeft -= done }
        return done == 0 ? .endOfStream : .frames(done)
    }

    /// Playback: writes `frames` interleaved frames, recovering from underruns; a device that
    /// went away or stopped working throws.
    public func write(_ buffer: UnsafePointer<Int16>, frames: Int) throws -> Transfer {
        let mark = ALSALibMessages.mark()
        var done = 0
        while done < frames {
            let n = snd_pcm_writei(pcm, buffer + done * channels, snd_pcm_uframes_t(frames - done))
            if n >= 0 {
                done += Int(n)
                continue
            }
            let code = Int32(n)
            if code == -EAGAIN { continue }
            try recover(code, since: mark)
        }
        return .frames(done)
    }

    /// Playback: waits (at most a second) until a period can be written without blocking, while
    /// the stream runs with less room than that. A stream that needs recovering, or a plugin
    /// that is never short of room (file, null), returns at once: the write that follows
    /// recovers or reports the failure.
    public func waitForRoom() {
        let available = snd_pcm_avail_update(pcm)
        guard available >= 0, available < periodFrames, snd_pcm_state(pcm) == SND_PCM_STATE_RUNNING else { return }
        _ = snd_pcm_wait(pcm, 1000)
    }

    /// Frames queued in the device (playback: not yet played; capture: not yet read).
    public var delayFrames: Int { reportedDelayFrames ?? 0 }

    /// `delayFrames`, or nil when the device does not report it (`snd_pcm_delay` fails).
    public var reportedDelayFrames: Int? {
        if delayUnavailableForTesting { return nil }
        var delay: snd_pcm_sframes_t = 0
        return snd_pcm_delay(pcm, &delay) >= 0 ? Int(max(0, delay)) : nil
    }

    /// Test hook: the device stops reporting its delay, as some plugins never do.
    var delayUnavailableForTesting = false

    /// Lets queued playback finish.
    public func drain() { snd_pcm_drain(pcm) }

    /// Xruns (-EPIPE), suspends (-ESTRPIPE) and interrupted calls are recovered; anything else,
    /// or a recovery that fails, is the device's end: thrown with what ALSA said.
    private func recover(_ code: Int32, since mark: UInt64) throws {
        if code == -EPIPE || code == -ESTRPIPE || code == -EINTR {
            if code != -EINTR { xrunCount.add(1, ordering: .relaxed) }
            let rc = snd_pcm_recover(pcm, code, 1)
            if rc >= 0 { return }
            throw transferError(rc, recovering: code, since: mark)
        }
        throw transferError(code, recovering: nil, since: mark)
    }

    /// What a failed transfer means. A USB microphone pulled out mid-read makes the kernel fail
    /// the blocked call with -EBADFD (the stream is now DISCONNECTED) and every later call with
    /// -ENODEV (the card's file operations are replaced); -EIO is the kernel giving up after
    /// waiting about 10 s for a period that never came (a hung or vanished device) or a plugin
    /// failing (the file plugin cannot write its file); -ENODATA a source that depends on
    /// another stream that is not running (an echo reference), which only a reopen fixes.
    private func transferError(_ code: Int32, recovering: Int32?, since mark: UInt64) -> AudioDeviceError {
        let what = direction == .capture ? "capture" : "playback"
        let detail = ALSALibMessages.since(mark)
        let error = -code
        let gone = [ENODEV, ENOTTY, ENXIO, EBADFD, ESHUTDOWN].contains(error)
        let during = recovering.map { $0 == -ESTRPIPE ? " while resuming after a suspend" : (direction == .capture ? " while recovering from an overrun" : " while recovering from an underrun") } ?? ""
        if gone {
            return AudioDeviceError(device: name, message: "the \(what) device went away (unplugged?)\(during): \(alsaMessage(code))",
                                    kind: .disconnected, alsaDetail: detail)
        }
        let why: String
        if recovering != nil {
            why = "\(what) could not restart\(during): \(alsaMessage(code))"
        } else if error == EIO {
            why = "\(what) stopped: \(alsaMessage(code)) (the device \(direction == .capture ? "delivered" : "took") no audio in time, or its plugin failed; unplugged or hung?)"
        } else if error == ENODATA {
            why = "\(what) stopped: \(alsaMessage(code)) (the stream it depends on is not running)"
        } else {
            why = "\(what) failed: \(alsaMessage(code))"
        }
        return AudioDeviceError(device: name, message: why, kind: .failed, alsaDetail: detail)
    }

    private static func openHint(_ code: Int32) -> String {
        switch -code {
        case EBUSY: return " (another program is using it)"
        case EACCES, EPERM: return " (no permission: is this user in the `audio` group?)"
        default: return ""
        }
    }

    /// The size of the regular file a `file` PCM named `name` reads as its `infile`, looked up in
    /// `configuration` or the system's ALSA configuration; nil when it reads a pipe, a device,
    /// a descriptor number, or nothing.
    private static func fileSourceBytes(name: String, configuration: OpaquePointer?) -> Int? {
        var top = configuration
        var global: OpaquePointer?
        if top == nil {
            guard snd_config_update_ref(&global) >= 0, let global else { return nil }
            top = global
        }
        defer { if let global { snd_config_unref(global) } }
        var definition: OpaquePointer?
        guard snd_config_search_definition(top, "pcm", name, &definition) >= 0, let definition else { return nil }
        defer { snd_config_delete(definition) }
        var node: OpaquePointer?
        var path: UnsafePointer<CChar>?
        guard snd_config_search(definition, "infile", &node) >= 0, snd_config_get_string(node, &path) >= 0, let path else { return nil }
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int(info.st_size)
    }

    /// Test hook: stops the stream behind the reader's back, so that every transfer fails as
    /// on a device that went away: alsa-lib answers -EBADFD (the stream is neither prepared nor
    /// running), the kernel's answer for a DISCONNECTED one.
    func breakStreamForTesting() { snd_pcm_drop(pcm) }
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
        ALSALibMessages.install()
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
