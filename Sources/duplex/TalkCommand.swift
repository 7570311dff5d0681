import ArgumentParser
import DuplexAudio
import DuplexCore
import DuplexEngine
import DuplexServer
import Foundation
import Synchronization

/// A live spoken conversation at the terminal: ALSA in and out (or stdin/stdout with --pipe), full
/// duplex, the inner monologue as live text, level meters and lag on a status line; Ctrl-C ends
/// with a summary. The model runs here, or on a server with --connect: either way the same live
/// loop carries the audio.
struct Talk: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Talk with the model live: microphone in, speaker out, the inner monologue as text.",
        discussion: """
            Devices are ALSA names (`duplex devices` lists them): default, plughw:1,0, … Devices that only offer \
            44.1/48 kHz or stereo are resampled and mixed. --connect ws://HOST:PORT talks to a model served \
            elsewhere (`duplex serve`, or Kyutai's own server) with Opus on the wire. --pipe replaces the sound \
            card by raw s16le 24 kHz on stdin/stdout, paced in real time. Loudspeakers work: the microphone goes \
            through echo cancellation first (--aec webrtc by default, with noise suppression, an 80 Hz high-pass and \
            gain control), its reference exactly what was handed to the playback device, lined up with the capture \
            by the devices' reported delays; the status line shows the echo delay found and the ERLE. --aec off for \
            headphones.
            """)

    @OptionGroup var model: ModelOption

    @Option(name: [.customShort("i"), .long], help: "ALSA capture device (default: default).")
    var inputDevice: String?

    @Option(name: [.customShort("o"), .long], help: "ALSA playback device (default: default).")
    var outputDevice: String?

    @Option(help: "Record the conversation as stereo WAV (user left, system right).")
    var record: String?

    @Option(help: "Talk to a remote server instead of a local model: ws://HOST:PORT or wss://HOST:PORT (path /api/chat by default; wss:// checks the certificate against the system's trust store unless --insecure).")
    var connect: String?

    @Option(help: "Token for --connect (a server started with --token).")
    var token: String?

    @Flag(help: "With --connect wss://…: accept the server's certificate unchecked (a self-signed duplex serve: compare the fingerprint it printed first). The connection is still encrypted.")
    var insecure = false

    @Option(help: "Stop after this many seconds (default: until Ctrl-C or the end of --pipe's input).")
    var seconds: Double?

    @Flag(help: "No sound card: raw s16le 24 kHz mono from stdin is the microphone (paced in real time) and the answer goes to stdout; text and the summary go to stderr.")
    var pipe = false

    @OptionGroup var capture: CaptureOptions
    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var persona: PersonaOptions
    @OptionGroup var runtime: LMRuntimeOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        if insecure && !(connect?.lowercased().hasPrefix("wss://") ?? false) && !(connect?.lowercased().hasPrefix("https://") ?? false) {
            throw ValidationError("--insecure is for --connect wss://… (a TLS server)")
        }
        if connect == nil && token != nil { throw ValidationError("--token is for --connect (a server started with --token); a local model needs none") }
        if connect != nil && model.given { throw ValidationError("--model runs a local model; with --connect the server's model answers: drop one of them") }
        if connect != nil && runtime.given { throw ValidationError("--kv-cache sets how a local model runs; with --connect the server's model answers") }
        if connect != nil && compute.threads != nil { throw ValidationError("-t/--threads sets local compute threads; with --connect nothing is computed here") }
        if connect != nil && sampling.firstFrame != FirstFrameRule.kyutaiServer.rawValue {
            throw ValidationError("--first-frame applies to a local model; a server applies its own rule")
        }
        if pipe && (inputDevice != nil || outputDevice != nil) { throw ValidationError("--pipe replaces the sound card (stdin/stdout): drop -i/-o") }
        if let seconds, !(seconds > 0) { throw ValidationError("--seconds must be > 0") }
    }

    func run() async throws {
        compute.apply()
        signal(SIGPIPE, SIG_IGN)
        let stop = StopSignal()
        let processor: FrameProcessor
        let remote: RemoteConversation?
        let engine: EngineModel?
        if let connect {
            let conversation = RemoteConversation()
            let p = sampling
            // A PersonaPlex server's persona: the voice is a name in its voice directory.
            if let voice = persona.voicePrompt, voice.contains("/") {
                throw CLIError("with --connect, --voice-prompt names a voice in the server's voice directory (e.g. NATF0.pt), not a local path")
            }
            let parameters = SessionParameters(textTemperature: p.textTemperature, textTopK: p.textTopK, audioTemperature: p.temperature,
                                               audioTopK: p.topK, textSeed: p.seed, audioSeed: p.seed, voicePrompt: persona.voicePrompt,
                                               textPrompt: persona.textPrompt)
            do {
                try await conversation.connect(url: connect, parameters: parameters, token: token, tls: ClientTLS(verify: !insecure))
            } catch {
                throw CLIError("cannot talk to \(connect): \(error)")
            }
            (processor, remote, engine) = (conversation, conversation, nil)
        } else {
            let loaded = try model.load(runtime, sampling: sampling, persona: persona)
            (processor, remote, engine) = (try sampling.session(loaded, prompt: persona.prompt(for: loaded)), nil, loaded)
        }
        let result = Result { try converse(processor: processor, engine: engine, remote: remote, stop: stop) }
        if let remote { await remote.close() }
        try result.get()
    }

    /// The live loop over the chosen source and sink, the screen, and the summary.
    private func converse(processor: FrameProcessor, engine: EngineModel?, remote: RemoteConversation?, stop: StopSignal) throws {
        var source: FrameSource, sink: FrameSink
        var options = LiveLoop.Options()
        options.recordSeconds = record == nil ? nil : 10
        var device: ALSAAudioDevice?
        if pipe {
            source = PCMStreamSource(fd: STDIN_FILENO, realtime: true, tailFrames: 0)
            sink = PCMStreamSink(fd: STDOUT_FILENO, paced: true)
        } else {
            let d = try ALSAAudioDevice(input: inputDevice ?? "default", output: outputDevice ?? "default")
            options.periodFrames = d.periodFrames
            (source, sink, device) = (d, d, d)
        }
        // Between the microphone and the model, on the capture thread; its reference is what the
        // playback thread hands the device. Without the library or the devices' delays: a warning,
        // and the conversation goes on without.
        let processing: EchoCancellation?, processingOff: String?
        (source, sink, processing, processingOff) = CaptureOptions.wrap(source: source, sink: sink, options: capture.resolve(defaultCanceller: .webrtc), alignment: .clock)
        let loop = LiveLoop(processor: processor, source: source, sink: sink, options: options)
        let ui = TerminalUI(toStderr: pipe)
        let who = remote == nil ? (engine?.name ?? "") : "connected to \(connect ?? "")"
        if let device {
            let capture = device.capture, playback = device.playback!
            ui.start("duplex talk — \(who) — mic \(capture.name) (\(capture.sampleRate) Hz × \(capture.channels)) → "
                     + "speaker \(playback.name) (\(playback.sampleRate) Hz × \(playback.channels)). Ctrl-C to stop.")
        } else {
            ui.start("duplex talk — \(who) — stdin → stdout (s16le 24 kHz, real time). Ctrl-C to stop.")
        }
        var decoder = engine.flatMap { e in e.tokenizer.map { IncrementalDecoder(tokenizer: $0, special: TextStreamSpecialIds(
            epad: e.config.textEndPaddingId, pad: e.config.textPaddingId, start: e.config.textCard)) } }
        var recent = Percentiles(capacity: 64)
        var all = Percentiles()
        var previous: FrameTimestamps?
        let clock = MonotonicClock()
        let started = clock.now()
        let limit = seconds.map { UInt64($0 * 1e9) }
        var failure: Error?
        var end = LiveLoop.End.stopped
        do {
            end = try loop.run(shouldStop: {
                stop.isSet || (limit.map { clock.now() - started >= $0 } ?? false) || remote?.closedWithCode != nil
            }, onTick: { finished in
                loop.pipeline.drainText { event in
                    let piece = decoder != nil ? decoder!.push(Int(event.token)) : engine?.displayText(event.token)
                    if let piece, !piece.isEmpty { ui.append(piece) }
                }
                for piece in remote?.drainText() ?? [] { ui.append(piece) }
                if remote == nil {
                    for stamps in finished {
                        if let p = previous, p != stamps {
                            let total = LatencyBreakdown(frame: p, response: stamps).total
                            recent.record(total)
                            all.record(total)
                        }
                        previous = stamps
                    }
                }
                var line = "in \(TerminalUI.meter(loop.inputLevel.level)) out \(TerminalUI.meter(loop.outputLevel.level)) "
                if let remote {
                    line += " late \(remote.late) frame(s)"
                } else {
                    line += String(format: "latency %3.0f ms", recent.count > 0 ? recent.percentile(50) : 0)
                        + "  lag \(loop.pipeline.queuedInputFrames) frame(s)"
                }
                if let device { line += "  xruns in \(device.xruns.capture) out \(device.xruns.playback)" }
                if let processing { line += "  " + processing.statusText }
                ui.status(line)
            })
        } catch {
            failure = error
        }
        var notes: [String] = []
        if let record, let recorder = loop.recorder {
            let seconds = try recorder.write(to: record)
            notes.append(String(format: "recorded %.1f s to %@ (user left, system right)", seconds, record))
        }
        let c = loop.pipeline.counters
        var summary = String(format: "%d frames (%.1f s).", c.framesProcessed, Double(c.framesProcessed) * 0.08)
        if remote == nil {
            summary += String(format: " Mic-to-speaker latency p50 %.0f ms, p95 %.0f ms, p99 %.0f ms.", all.percentile(50), all.percentile(95), all.percentile(99))
        }
        summary += " Underruns \(c.underruns), overruns \(c.overruns), dropped input frames \(c.droppedInputFrames)"
        if let device { summary += ", xruns in \(device.xruns.capture) out \(device.xruns.playback)" }
        summary += "."
        if let remote {
            summary += " Late frames (played as silence) \(remote.late)."
            if let code = remote.closedWithCode { summary += " The server closed the connection (code \(code))." }
            if let message = remote.errorMessage { summary += " Server error: \(message)." }
        }
        if let note = loop.priorityNote { summary += " Audio threads: \(note)." }
        if let processing {
            summary += " " + processing.summaryText
        } else if let processingOff {
            summary += " No echo cancellation: \(processingOff)."
        } else {
            summary += " No echo cancellation (--aec off)."
        }
        if end == .endOfInput { summary += " End of input." }
        ui.finish(([summary] + notes).joined(separator: "\n"))
        if let failure { throw CLIError("\(failure)") }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM set a flag the UI loop reads; nothing else happens in the handler.
final class StopSignal: @unchecked Sendable {
    private let flag = Atomic<Bool>(false)
    private var sources: [DispatchSourceSignal] = []

    init() {
        sources = [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [unowned self] in self.set() }
            source.resume()
            return source
        }
    }

    var isSet: Bool { flag.load(ordering: .relaxed) }
    func set() { flag.store(true, ordering: .relaxed) }
}
