import ArgumentParser
import DuplexAudio
import DuplexCore
import DuplexEngine
import DuplexServer
import Foundation
import Synchronization

/// A live spoken conversation at the terminal: ALSA in and out, full duplex, the inner monologue
/// as live text, level meters and lag on a status line; Ctrl-C ends with a summary.
struct Talk: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Talk with the model live: microphone in, speaker out, the inner monologue as text.",
        discussion: """
            Devices are ALSA names (`duplex devices` lists them): default, plughw:1,0, … Devices that only offer \
            44.1/48 kHz or stereo are resampled and mixed. --connect ws://HOST:PORT talks to a model served \
            elsewhere (`duplex serve`, or Kyutai's own server) with Opus on the wire. Use headphones: there is no \
            echo cancellation, so the model would hear itself.
            """)

    @OptionGroup var model: ModelOption

    @Option(name: [.customShort("i"), .long], help: "ALSA capture device.")
    var inputDevice = "default"

    @Option(name: [.customShort("o"), .long], help: "ALSA playback device.")
    var outputDevice = "default"

    @Option(help: "Record the conversation as stereo WAV (user left, system right).")
    var record: String?

    @Option(help: "Talk to a remote server instead of a local model: ws://HOST:PORT (path /api/chat by default).")
    var connect: String?

    @Option(help: "Token for --connect (a server started with --token).")
    var token: String?

    @Option(help: "Stop after this many seconds (default: until Ctrl-C).")
    var seconds: Double?

    @Flag(help: "With --connect: no sound card; raw s16le 24 kHz mono from stdin is the microphone (paced in real time) and the answer goes to stdout.")
    var pipe = false

    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var compute: ComputeOptions

    func run() async throws {
        compute.apply()
        let stop = StopSignal()
        if let connect {
            try await RemoteTalk(options: self, url: connect, stop: stop).run()
        } else {
            try LocalTalk(options: self, stop: stop).run()
        }
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

/// Writes the conversation as stereo: user (microphone) left, system (speaker) right.
func writeRecording(_ path: String, user: [Float], system: [Float]) throws {
    let n = max(user.count, system.count)
    var interleaved = [Float](repeating: 0, count: 2 * n)
    for i in 0..<user.count { interleaved[2 * i] = user[i] }
    for i in 0..<system.count { interleaved[2 * i + 1] = system[i] }
    try WAV(sampleRate: 24_000, channels: 2, samples: interleaved).write(to: path)
    warn(String(format: "recorded %.1f s to %@ (user left, system right)", Double(n) / 24_000, path))
}

struct LocalTalk {
    let options: Talk
    let stop: StopSignal

    func run() throws {
        let engine = try options.model.load()
        let session = engine.makeSession(sampling: options.sampling.parameters(for: engine.config))
        let device = try ALSAAudioDevice(input: options.inputDevice, output: options.outputDevice)
        if options.record != nil { device.enableRecording() }
        var runOptions = LiveRunner.Options()
        runOptions.frames = Int.max
        runOptions.warmupFrames = 0
        let runner = LiveRunner(processor: session, signal: [], options: runOptions)
        let ui = TerminalUI()
        let capture = device.capture, playback = device.playback
        ui.start("duplex talk — \(engine.name) — mic \(capture.name) (\(capture.sampleRate) Hz × \(capture.channels)) → "
                 + "speaker \(playback.name) (\(playback.sampleRate) Hz × \(playback.channels)). Ctrl-C to stop.")
        var decoder = engine.tokenizer.map { IncrementalDecoder(tokenizer: $0, special: TextStreamSpecialIds(
            epad: engine.config.textEndPaddingId, pad: engine.config.textPaddingId, start: engine.config.textCard)) }
        var user: [Float] = [], system: [Float] = []
        var recent = Percentiles(capacity: 64)
        var previous: FrameTimestamps?
        let started = Date()
        let report = try runner.run(device: device, shouldStop: {
            stop.isSet || (options.seconds.map { Date().timeIntervalSince(started) >= $0 } ?? false) || session.failure != nil
        }, onTick: { pipeline, finished in
            pipeline.drainText { event in
                let piece: String?
                if decoder != nil { piece = decoder!.push(Int(event.token)) } else { piece = engine.displayText(event.token) }
                if let piece, !piece.isEmpty { ui.append(piece) }
            }
            for stamps in finished {
                if let p = previous, p != stamps { recent.record(LatencyBreakdown(frame: p, response: stamps).total) }
                previous = stamps
            }
            if options.record != nil { device.drainRecording(user: &user, system: &system) }
            let xruns = device.xruns
            ui.status("in \(TerminalUI.meter(device.inputLevel)) out \(TerminalUI.meter(device.outputLevel)) "
                      + String(format: "latency %3.0f ms", recent.count > 0 ? recent.percentile(50) : 0)
                      + "  lag \(pipeline.queuedInputFrames) frame(s)  xruns in \(xruns.capture) out \(xruns.playback)")
        })
        if let failure = session.failure { ui.finish(""); throw ValidationError("the model stopped: \(failure)") }
        if let record = options.record {
            device.drainRecording(user: &user, system: &system)
            try writeRecording(record, user: user, system: system)
        }
        let l = report.latency
        ui.finish(String(format: "%d frames (%.1f s). Mic-to-speaker latency p50 %.0f ms, p95 %.0f ms, p99 %.0f ms. ",
                         report.counters.framesProcessed, Double(report.counters.framesProcessed) * 0.08,
                         l.percentile(50), l.percentile(95), l.percentile(99))
                  + "Underruns \(report.counters.underruns), overruns \(report.counters.overruns), "
                  + "xruns in \(device.xruns.capture) out \(device.xruns.playback), dropped input frames \(report.counters.droppedInputFrames).")
    }
}
