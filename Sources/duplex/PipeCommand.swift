import ArgumentParser
import DuplexAudio
import DuplexCore
import DuplexEngine
import Foundation

struct Pipe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Raw PCM on stdin, raw PCM on stdout, streaming: a conversation through pipes.",
        discussion: """
            Output starts as soon as the first frame is answered and carries exactly as many samples as the
            input (the engine's latency shows as leading silence; the tail is flushed at end of input).
            Text goes to --text FILE or stderr, each piece with the time of its frame.
              arecord -f S16_LE -r 24000 -c 1 -t raw | duplex pipe | aplay -f S16_LE -r 24000 -c 1 -t raw
            """)

    @OptionGroup var model: ModelOption

    @Option(help: "Sample format of stdin and stdout: s16le or f32le.")
    var format: String = "s16le"

    @Option(help: "Sample rate of stdin and stdout (resampled to and from the model's 24 kHz).")
    var rate: Int = 24_000

    @Flag(help: "Pace input as a live microphone would (one 80 ms frame per 80 ms) instead of as fast as the model runs.")
    var realtime = false

    @Option(help: "Write the inner monologue here (default: stderr).")
    var text: String?

    @OptionGroup var capture: CaptureOptions
    @OptionGroup var room: RoomOption
    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var persona: PersonaOptions
    @OptionGroup var runtime: LMRuntimeOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        guard SampleFormat(rawValue: format) != nil else { throw ValidationError("--format must be s16le or f32le, got \(format)") }
        guard (8000...192_000).contains(rate) else { throw ValidationError("--rate must be between 8000 and 192000 Hz, got \(rate)") }
        _ = try room.parameters()
    }

    func run() throws {
        compute.apply()
        signal(SIGPIPE, SIG_IGN)
        let engine = try model.load(runtime, sampling: sampling, persona: persona)
        let session = try sampling.session(engine, prompt: persona.prompt(for: engine))
        let textOut = try TextOutput(path: text)
        let format = SampleFormat(rawValue: self.format)!
        let length = PCMStreamLength()
        let stdin = PCMStreamSource(fd: STDIN_FILENO, format: format, rate: rate, realtime: realtime, length: length)
        var source: FrameSource = stdin
        var sink: FrameSink = PCMStreamSink(fd: STDOUT_FILENO, format: format, rate: rate, length: length)
        // On a pipe, input sample n and output sample n share a timeline, and the answer to a
        // frame goes out after the frame came in: what was played one frame earlier is what an
        // echo of it can first carry.
        let alignment = EchoReference.Alignment.streamPosition(latencyFrames: engine.frameSize)
        if let parameters = try room.parameters() {
            (source, sink, _) = RoomOption.insert(parameters, source: source, sink: sink, alignment: alignment)
            warn("simulated room: \(parameters.spec)")
        }
        let processing: EchoCancellation?
        (source, sink, processing, _) = CaptureOptions.wrap(source: source, sink: sink, options: capture.resolve(defaultCanceller: .off), alignment: alignment)
        let frameSeconds = Double(engine.frameSize) / 24_000
        defer { if let processing { warn(processing.summaryText) } }
        do {
            _ = try FrameLoop.runInline(processor: session, source: source, sink: sink) { pipeline in
                pipeline.drainText { event in
                    guard let piece = engine.displayText(event.token) else { return }
                    textOut.write(String(format: "%8.2f\t%@\n", Double(event.frame) * frameSeconds, piece))
                }
            }
        } catch {
            throw CLIError("\(error)")
        }
        if stdin.trailingBytes > 0 {
            warn("warning: input ended with \(stdin.trailingBytes) byte(s) that do not make a whole \(self.format) sample; ignored")
        }
    }
}

/// Where a command's text goes: a file (`--text FILE`) or stderr.
final class TextOutput {
    private let handle: FileHandle
    init(path: String?) throws {
        guard let path else { handle = .standardError; return }
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
            throw CLIError("cannot write --text \(path)")
        }
        handle = h
    }
    func write(_ s: String) { handle.write(Data(s.utf8)) }
}
