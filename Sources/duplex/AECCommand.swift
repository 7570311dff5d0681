import ArgumentParser
import DuplexAudio
import DuplexEngine
import Foundation

/// `duplex aec`: the capture processing `talk` runs, offline, on what was played and what the
/// microphone heard, with the figures that say how well it worked.
struct AEC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aec",
        abstract: "Cancel the echo in a recording, offline: FAR is what the loudspeaker played, MIC what the microphone heard.",
        discussion: """
            Use it to tune a setup: record what was played and what the microphone heard at the \
            same time (sample n of each at the same instant; a bulk delay between them up to \
            0.5 s is found), then compare cancellers and options here, or score a simulated room \
            (duplex room --out MIC.wav --echo-out ECHO.wav). Both inputs are resampled to 24 kHz, \
            the rate talk processes at; CLEAN is 24 kHz mono. The processing is talk's, in the \
            same 10 ms calls; --aec is webrtc unless given.

            --recording takes a stereo WAV instead: channel 0 (left) the microphone, channel 1 \
            (right) what was played, the layout `talk --record` writes (user left, system right). \
            Note that talk records the microphone after its own processing: a recording made with \
            talk's echo cancellation on (its default) is already cleaned, so record with \
            `talk --aec off` to tune the canceller on it.

            Printed (stdout): the processing, the echo delay found, ERLE after 2 s \
            (10·log10 Σmic²/Σclean² from 2 s on: near speech lowers it, as it should be kept), \
            when the ERLE of each 1 s window the far end plays in stayed at or above 25 dB \
            (webrtc) or 15 dB (speex), with --echo the ERLE over the 100 ms windows where only \
            the echo is there, what duplex's buffering adds to the latency (the libraries' own \
            algorithmic delay is not included), and the processing cost per 80 ms frame. \
            --json writes the same figures for scripts (null where a figure does not apply).
            """)

    @Option(help: "What the loudspeaker played: WAV (any rate, resampled to 24 kHz) or raw s16le 24 kHz mono.")
    var far: String?

    @Option(help: "What the microphone heard, on the same timeline as --far.")
    var mic: String?

    @Option(help: "A stereo WAV instead of --far/--mic: left the microphone, right what was played (talk --record's layout).")
    var recording: String?

    @Option(help: "Where to write the cleaned microphone (24 kHz mono WAV).")
    var out: String

    @OptionGroup var capture: CaptureOptions

    @Option(help: "The echo component alone (as duplex room --echo-out writes): also score the windows where only the echo is there.")
    var echo: String?

    @Option(help: "Write the figures as JSON here.")
    var json: String?

    @Flag(help: "Write CLEAN as 32-bit float instead of 16-bit PCM.")
    var float = false

    /// 10 ms at 24 kHz: the chunk both libraries work in, and how talk's capture thread calls.
    static let callFrames = 240
    /// Windows for the convergence curve and for deciding where the far end plays.
    static let curveWindowSeconds = 1
    /// The far end counts as playing in a window whose RMS is at least this.
    static let farActiveDecibels = -45.0
    /// With --echo: windows where the echo is at least `farActiveDecibels` and everything else
    /// at the microphone (near talker, noise) is below this count as echo only.
    static let nearSilentDecibels = -50.0
    static let echoOnlyWindowFrames = 2_400
    /// ERLE is scored from here on: the canceller's first seconds are its convergence.
    static let settledSeconds = 2

    func validate() throws {
        if recording != nil {
            if far != nil || mic != nil { throw ValidationError("--recording holds both streams: leave out --far and --mic") }
        } else if far == nil || mic == nil {
            throw ValidationError("give --far (what was played) and --mic (what the microphone heard), or --recording STEREO.wav")
        }
        if capture.resolve(defaultCanceller: .webrtc).isIdentity {
            throw ValidationError("--aec off without --ns on, --agc on or --high-pass on: nothing to do")
        }
    }

    func run() throws {
        let options = capture.resolve(defaultCanceller: .webrtc)
        // Before reading anything: offline there is no point falling back to no processing.
        let processor: CaptureProcessor
        do { processor = try CaptureProcessor(options: options, sampleRate: EchoAudio.sampleRate) } catch {
            throw CLIError("\(options.summary): \(error)")
        }
        var (farSignal, micSignal) = try readInputs()
        let count = min(farSignal.count, micSignal.count)
        guard count > 0 else { throw CLIError("\(micSignal.isEmpty ? micName : farName): no audio") }
        if farSignal.count != micSignal.count {
            warn(String(format: "warning: %@ has %d samples, %@ %d: processing the first %d (%.2f s)", farName, farSignal.count,
                        micName, micSignal.count, count, Double(count) / Double(EchoAudio.sampleRate)))
            farSignal.removeLast(farSignal.count - count)
            micSignal.removeLast(micSignal.count - count)
        }
        var echoSignal: [Float]?
        if let echo {
            var signal = try EchoAudio.read(echo)
            if signal.count != count {
                warn("warning: \(echo) has \(signal.count) samples, the microphone \(count): scoring the samples both have")
                signal = Array(signal.prefix(count))
            }
            echoSignal = signal
        }

        let clean = Self.process(processor, far: farSignal, mic: micSignal)
        let report = Report(options: options, processor: processor, far: farSignal, mic: micSignal, clean: clean, echo: echoSignal)
        try EchoAudio.write(clean, to: out, float: float)
        for line in report.lines { print(line) }
        if processor.status.lastErrorCode != 0 {
            warn("warning: the library refused some 10 ms chunks (last error code \(processor.status.lastErrorCode)): they passed through unprocessed")
        }
        if let json {
            do { try (JSONOutput.line(report.json, pretty: true) + "\n").write(toFile: json, atomically: true, encoding: .utf8) } catch {
                throw CLIError("cannot write \(json): \(error.localizedDescription)")
            }
        }
    }

    private var farName: String { far ?? "\(recording ?? "?") (right)" }
    private var micName: String { mic ?? "\(recording ?? "?") (left)" }

    /// (far, mic) at 24 kHz, from the two files or the stereo recording's channels.
    private func readInputs() throws -> ([Float], [Float]) {
        if let far, let mic { return (try EchoAudio.read(far), try EchoAudio.read(mic)) }
        guard let recording else { throw CLIError("no input") }  // validate() rules this out
        guard FileManager.default.fileExists(atPath: recording) else { throw CLIError("\(recording): no such file") }
        let wav: WAV
        do { wav = try WAV.read(recording) } catch { throw CLIError("\(error)") }
        guard wav.channels == 2 else {
            throw CLIError("\(recording): \(wav.channels) channel\(wav.channels == 1 ? "" : "s"); --recording needs stereo, "
                           + "the microphone left and what was played right (as talk --record writes), or use --far and --mic")
        }
        var left = [Float](repeating: 0, count: wav.frameCount), right = left
        for i in 0..<wav.frameCount {
            left[i] = wav.samples[2 * i]
            right[i] = wav.samples[2 * i + 1]
        }
        if wav.sampleRate != EchoAudio.sampleRate {
            warn("\(recording): resampled \(wav.sampleRate) Hz → \(EchoAudio.sampleRate) Hz")
            left = Resampler.resample(left, from: wav.sampleRate, to: EchoAudio.sampleRate)
            right = Resampler.resample(right, from: wav.sampleRate, to: EchoAudio.sampleRate)
        }
        EchoAudio.sanitize(&left)
        EchoAudio.sanitize(&right)
        return (right, left)
    }

    /// The microphone through the processor in 10 ms calls. The input is padded to whole calls
    /// so that the last partial one is processed too (a short call would only be buffered), and
    /// the output cut back to the input's length.
    static func process(_ processor: CaptureProcessor, far: [Float], mic: [Float]) -> [Float] {
        let calls = (mic.count + callFrames - 1) / callFrames
        let padding = calls * callFrames - mic.count
        let paddedFar = far + [Float](repeating: 0, count: padding)
        let paddedMic = mic + [Float](repeating: 0, count: padding)
        var out = [Float](repeating: 0, count: paddedMic.count)
        paddedFar.withUnsafeBufferPointer { f in
            paddedMic.withUnsafeBufferPointer { m in
                out.withUnsafeMutableBufferPointer { o in
                    for call in 0..<calls {
                        let start = call * callFrames
                        processor.process(near: m.baseAddress! + start, far: f.baseAddress! + start, count: callFrames,
                                          into: o.baseAddress! + start)
                    }
                }
            }
        }
        out.removeLast(padding)
        return out
    }
}

/// The figures of one `duplex aec` run.
private struct Report {
    let summary: String
    let canceller: EchoCanceller
    let seconds: Double
    let echoDelayMilliseconds: Double?
    let erleAfterSettling: Double?
    let curve: [Double]
    let convergenceThreshold: Double?
    let convergenceSeconds: Double?
    let echoOnlyErle: Double?
    let echoOnlyWindows: Int?
    let addedLatencyMilliseconds: Double
    let millisecondsPerFrame: Double
    let realTimeFactor: Double
    let libraryErle: Double?
    let nonFiniteSamples: Int

    init(options: CaptureProcessingOptions, processor: CaptureProcessor, far: [Float], mic: [Float], clean: [Float], echo: [Float]?) {
        let rate = EchoAudio.sampleRate
        summary = options.summary
        canceller = options.echoCanceller
        seconds = Double(mic.count) / Double(rate)
        echoDelayMilliseconds = processor.echoDelayFrames.map { Double($0) * 1000 / Double(rate) }
        let settled = AEC.settledSeconds * rate
        erleAfterSettling = mic.count > settled ? EchoMetrics.erle(microphone: mic, output: clean, range: settled..<mic.count) : nil
        let window = AEC.curveWindowSeconds * rate
        curve = EchoMetrics.erleCurve(microphone: mic, output: clean, window: window)
        switch options.echoCanceller {
        case .webrtc: convergenceThreshold = 25
        case .speex: convergenceThreshold = 15
        case .off: convergenceThreshold = nil
        }
        if let threshold = convergenceThreshold {
            // Over the far end, not the echo: with a real recording the echo is unknown.
            let active = EchoMetrics.activeWindows(signal: far, window: window, thresholdDecibels: AEC.farActiveDecibels)
            convergenceSeconds = EchoMetrics.convergenceTime(curve: curve, window: window, sampleRate: rate, threshold: threshold, active: active)
        } else {
            convergenceSeconds = nil
        }
        if let echo {
            (echoOnlyErle, echoOnlyWindows) = Self.echoOnly(mic: mic, clean: clean, echo: echo, from: settled)
        } else {
            (echoOnlyErle, echoOnlyWindows) = (nil, nil)
        }
        addedLatencyMilliseconds = Double(processor.addedLatencyFrames) * 1000 / Double(rate)
        let status = processor.status
        let processingSeconds = Double(status.processingNanoseconds) / 1e9
        // A chunk is 10 ms: eight of them make one of the model's 80 ms frames.
        millisecondsPerFrame = status.chunks > 0 ? processingSeconds * 1000 / Double(status.chunks) * 8 : 0
        realTimeFactor = processingSeconds / max(seconds, 1e-9)
        libraryErle = status.libraryErleDecibels.isFinite ? Double(status.libraryErleDecibels) : nil
        nonFiniteSamples = status.nonFiniteSamples
    }

    /// ERLE over the windows (from `from` on) where the echo plays and the rest of the
    /// microphone (near talker, noise) is below −50 dBFS: the cancellation alone, which near
    /// speech would otherwise hide. nil when no window qualifies.
    private static func echoOnly(mic: [Float], clean: [Float], echo: [Float], from start: Int) -> (Double?, Int?) {
        let window = AEC.echoOnlyWindowFrames
        let count = min(mic.count, echo.count)
        var micEnergy = 0.0, cleanEnergy = 0.0, windows = 0
        var begin = start
        while begin + window <= count {
            let range = begin..<(begin + window)
            var rest = [Float](repeating: 0, count: window)
            for (j, i) in range.enumerated() { rest[j] = mic[i] - echo[i] }
            let echoLevel = EchoAudio.level(echo[range]) ?? -.infinity
            let restLevel = EchoAudio.level(rest[...]) ?? -.infinity
            if echoLevel >= AEC.farActiveDecibels && restLevel < AEC.nearSilentDecibels {
                for i in range {
                    micEnergy += Double(mic[i]) * Double(mic[i])
                    cleanEnergy += Double(clean[i]) * Double(clean[i])
                }
                windows += 1
            }
            begin += window
        }
        guard windows > 0, micEnergy > 0 else { return (nil, 0) }
        let erle = cleanEnergy > 0 ? min(EchoMetrics.decibelCap, 10 * log10(micEnergy / cleanEnergy)) : EchoMetrics.decibelCap
        return (erle, windows)
    }

    var lines: [String] {
        func decibels(_ value: Double?) -> String { value.map { String(format: "%.1f dB", $0) } ?? "n/a" }
        var lines = ["processing: \(summary)"]
        lines.append(String(format: "audio: %.2f s at %d Hz, in 10 ms calls", seconds, EchoAudio.sampleRate))
        if canceller == .off {
            lines.append("echo delay: not estimated (--aec off)")
        } else {
            lines.append("echo delay: " + (echoDelayMilliseconds.map { String(format: "%.0f ms", $0) } ?? "not found (no echo of the far end in the microphone)"))
        }
        lines.append("ERLE after \(AEC.settledSeconds) s: " + (erleAfterSettling.map { String(format: "%.1f dB", $0) } ?? "n/a (shorter than \(AEC.settledSeconds) s)"))
        if let threshold = convergenceThreshold {
            let when = convergenceSeconds.map { String(format: "after %.0f s", $0) } ?? "never"
            lines.append(String(format: "converged (ERLE ≥ %.0f dB in every later 1 s window the far end plays in): %@", threshold, when))
        }
        if let echoOnlyWindows {
            lines.append("echo-only ERLE after \(AEC.settledSeconds) s: \(decibels(echoOnlyErle)) (\(echoOnlyWindows) windows of 100 ms with the echo alone)")
        }
        lines.append(String(format: "added latency: %.0f ms of duplex's buffering (the library's own algorithmic delay is not included)",
                            addedLatencyMilliseconds))
        lines.append(String(format: "processing cost: %.3f ms per 80 ms frame (real-time factor %.4f)", millisecondsPerFrame, realTimeFactor))
        return lines
    }

    var json: [String: Any] {
        func value(_ x: Double?) -> Any { x.map { $0 as Any } ?? NSNull() }
        return [
            "processing": summary,
            "echo_canceller": canceller.rawValue,
            "sample_rate": EchoAudio.sampleRate,
            "seconds": seconds,
            "echo_delay_ms": value(echoDelayMilliseconds),
            "erle_after_2s_db": value(erleAfterSettling),
            "erle_curve_db": curve,
            "erle_curve_window_s": AEC.curveWindowSeconds,
            "convergence_threshold_db": value(convergenceThreshold),
            "convergence_s": value(convergenceSeconds),
            "echo_only_erle_db": value(echoOnlyErle),
            "echo_only_windows": echoOnlyWindows.map { $0 as Any } ?? NSNull(),
            "library_erle_db": value(libraryErle),
            "added_latency_ms": addedLatencyMilliseconds,
            "processing_ms_per_frame": millisecondsPerFrame,
            "real_time_factor": realTimeFactor,
            "non_finite_samples": nonFiniteSamples,
        ]
    }
}
