import ArgumentParser
import DuplexAudio
import DuplexCore
import DuplexEngine
import Foundation

/// Kyutai STT from a file, a pipe or the microphone: words as they are recognised, with their
/// times, the way Kyutai's run_inference feeds the model (silence prefix, trailing flush) and its
/// scripts read the semantic VAD.
struct Transcribe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Live speech-to-text with a Kyutai STT model (kyutai/stt-1b-en_fr, kyutai/stt-2.6b-en).",
        discussion: """
            IN.wav transcribes a file (any rate, mono or stereo; resampled to 24 kHz), `-` reads raw PCM from
            stdin (--format, --rate), and no input listens to the microphone (-i DEVICE, Ctrl-C to stop).
            Plain output prints words as they come, one turn per line when the model has a semantic VAD head;
            --json prints one JSON object per line: {"type":"word","text":…,"start":s,"end":s} and
            {"type":"end_of_turn","time":s}, then {"type":"summary",…}.
            """)

    @OptionGroup var model: ModelOption

    @Argument(help: "Audio to transcribe: a WAV file, or - for raw PCM on stdin; none = the microphone.")
    var input: String?

    @Option(help: "Sample format of stdin: s16le or f32le.")
    var format: String = "s16le"

    @Option(help: "Sample rate of stdin (resampled to the model's 24 kHz).")
    var rate: Int = 24_000

    @Option(name: [.customShort("i"), .long], help: "ALSA capture device when listening (default: default).")
    var inputDevice: String?

    @Flag(help: "Word-level JSON lines (start/end times) instead of text.")
    var json = false

    @Option(name: .customLong("vad-threshold"), help: "Semantic-VAD probability that ends a turn (default 0.5, as Kyutai's scripts).")
    var vadThreshold: Float = 0.5

    @Flag(help: "Pace a file or stdin as a live microphone would (one 80 ms frame per 80 ms).")
    var realtime = false

    @OptionGroup var runtime: LMRuntimeOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        guard SampleFormat(rawValue: format) != nil else { throw ValidationError("--format must be s16le or f32le, got \(format)") }
        guard (8000...192_000).contains(rate) else { throw ValidationError("--rate must be between 8000 and 192000 Hz, got \(rate)") }
        guard vadThreshold > 0 && vadThreshold < 1 else { throw ValidationError("--vad-threshold must be in (0, 1), got \(vadThreshold)") }
        if input == nil && realtime { throw ValidationError("--realtime paces a file or stdin; the microphone is live already") }
        if input != "-" && (format != "s16le" || rate != 24_000) && input != nil {
            throw ValidationError("--format and --rate describe stdin (input -); a WAV file says its own")
        }
        if input != nil && inputDevice != nil { throw ValidationError("--input-device is for the microphone (no input argument)") }
    }

    func run() throws {
        compute.apply()
        signal(SIGPIPE, SIG_IGN)
        let folder = try ModelFolder(model.path)
        for note in folder.notes { warn("note: \(note)") }
        let c = folder.config
        guard c.kind == .stt || !c.speaks else {
            throw CLIError("\(folder.path) is a \(c.kind.rawValue) model: `duplex transcribe` runs Kyutai STT models "
                           + "(model_type \"stt\"), e.g. kyutai/stt-1b-en_fr or kyutai/stt-2.6b-en")
        }
        // Check the input before the (long) load.
        var fileAudio: [Float]?
        if let input, input != "-" {
            fileAudio = try CodecAudio.read(input, raw: false, sampleRate: 24_000)
            if fileAudio!.isEmpty { throw CLIError("\(input): no audio") }
        }
        _ = try folder.tokenizerPath   // STT's words need its tokenizer: name the missing file now
        let engine = try model.load(runtime, folder: folder, tokenizer: true)
        guard let tokenizer = engine.tokenizer else { throw CLIError("\(folder.path): no tokenizer") }
        let transcriber = try Transcriber(model: engine, endOfTurnThreshold: vadThreshold)

        let prefix = Int(c.sttSilencePrefixSeconds * 24_000)
        let suffix = Int((c.sttAudioDelaySeconds + 1) * 24_000)
        let stop = StopSignal()
        var device: ALSAAudioDevice?
        var pcm: PCMStreamSource?
        let inner: FrameSource
        if let fileAudio {
            inner = SignalSource(fileAudio, realtime: realtime)
        } else if input == "-" {
            let s = PCMStreamSource(fd: STDIN_FILENO, format: SampleFormat(rawValue: format)!, rate: rate, realtime: realtime, tailFrames: 0)
            (inner, pcm) = (s, s)
        } else {
            let d = try ALSAAudioDevice(input: inputDevice ?? "default", output: nil)
            (inner, device) = (d, d)
        }
        let source = PaddedSource(inner, prefix: prefix, suffix: suffix)
        var options = LiveLoop.Options()
        if let device { options.periodFrames = device.periodFrames }
        // Up to 20 s behind the microphone before audio is skipped (and then said in the summary).
        options.maxQueuedInputFrames = 250
        let loop = LiveLoop(processor: transcriber, source: source, sink: NullSink(), options: options)
        let printer = TranscriptPrinter(json: json, tokenizer: tokenizer, config: c)
        if device != nil { warn("listening on \(inputDevice ?? "default") — Ctrl-C to stop") }
        let clock = MonotonicClock()
        let started = clock.now()
        var failure: Error?
        do {
            _ = try loop.run(shouldStop: { stop.isSet }, onTick: { _ in
                loop.pipeline.drainText { printer.handle($0) }
            })
        } catch {
            failure = error
        }
        loop.pipeline.drainText { printer.handle($0) }
        var frames = loop.pipeline.counters.framesProcessed
        if stop.isSet && failure == nil {
            // Stopped early (Ctrl-C): the tail of silence still goes through, so the last words come out.
            let silence = [Float](repeating: 0, count: transcriber.frameSize)
            var output = silence
            var stamps = FrameTimestamps()
            for _ in 0..<(suffix / transcriber.frameSize) {
                let token = silence.withUnsafeBufferPointer { s in
                    output.withUnsafeMutableBufferPointer { transcriber.process(s.baseAddress!, output: $0.baseAddress!, stamps: &stamps, clock: clock) }
                }
                if token != nil || transcriber.endOfTurn {
                    printer.handle(FramePipeline.TextEvent(frame: frames, token: token ?? -1, endOfTurn: transcriber.endOfTurn))
                }
                frames += 1
            }
        }
        printer.finish(frame: frames)
        let counters = loop.pipeline.counters
        let seconds = Double(clock.now() - started) / 1e9
        let audioSeconds = Double(frames) * 0.08
        printer.summary(frames: frames, seconds: seconds, realTimeFactor: seconds / max(1e-9, audioSeconds),
                        xruns: device?.xruns.capture, skipped: counters.droppedInputFrames + counters.overruns)
        if let pcm, pcm.trailingBytes > 0 {
            warn("warning: input ended with \(pcm.trailingBytes) byte(s) that do not make a whole \(format) sample; ignored")
        }
        if let failure { throw CLIError("\(failure)") }
    }
}

/// Words and turns to stdout, as text or JSON lines; the summary to stderr (or as JSON).
final class TranscriptPrinter {
    private var assembler: WordAssembler
    private let json: Bool
    private var words = 0
    private var turns = 0
    private var lineOpen = false

    init(json: Bool, tokenizer: SentencePieceTokenizer, config: LMConfig) {
        self.json = json
        assembler = WordAssembler(tokenizer: tokenizer, config: config)
    }

    func handle(_ event: FramePipeline.TextEvent) {
        if event.token >= 0, let word = assembler.push(event.token, frame: event.frame) { emit(word) }
        if event.endOfTurn {
            if let word = assembler.flush(frame: event.frame) { emit(word) }
            turns += 1
            if json {
                line(jsonLine(["type": "end_of_turn", "time": round3(assembler.time(ofFrame: event.frame))]))
            } else if lineOpen {
                write("\n")
                lineOpen = false
            }
        }
    }

    func finish(frame: Int) {
        if let word = assembler.flush(frame: frame) { emit(word) }
        if !json && lineOpen { write("\n") }
    }

    func summary(frames: Int, seconds: Double, realTimeFactor: Double, xruns: Int?, skipped: Int) {
        let text = String(format: "transcribed %.1f s of audio (%d frames, silence padding included) in %.1f s: real-time factor %.2f, "
                          + "%d word(s), %d turn end(s)", Double(frames) * 0.08, frames, seconds, realTimeFactor, words, turns)
            + (xruns.map { ", capture xruns \($0)" } ?? "")
            + (skipped > 0 ? ", \(skipped) frame(s) of audio SKIPPED (the model fell more than 20 s behind: try --quantize q8)" : "")
        if json {
            var object: [String: Any] = ["type": "summary", "frames": frames, "seconds": round3(seconds),
                                         "real_time_factor": round3(realTimeFactor), "words": words, "turns": turns]
            if let xruns { object["capture_xruns"] = xruns }
            object["skipped_frames"] = skipped
            line(jsonLine(object))
        }
        warn(text)
    }

    private func emit(_ word: WordAssembler.Word) {
        words += 1
        if json {
            line(jsonLine(["type": "word", "text": word.text, "start": round3(word.start), "end": round3(word.end)]))
        } else {
            write((lineOpen ? " " : "") + word.text)
            lineOpen = true
        }
    }

    private func line(_ s: String) { write(s + "\n") }

    /// Unbuffered, so a word shows (or reaches the next process in a pipe) as soon as it is recognised.
    private func write(_ s: String) { FileHandle.standardOutput.write(Data(s.utf8)) }

    private func round3(_ x: Double) -> Double { (x * 1000).rounded() / 1000 }
    private func jsonLine(_ object: [String: Any]) -> String { (try? JSONOutput.line(object)) ?? "{}" }
}
