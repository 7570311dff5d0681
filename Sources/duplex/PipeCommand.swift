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

    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        guard SampleFormat(rawValue: format) != nil else { throw ValidationError("--format must be s16le or f32le, got \(format)") }
        guard (8000...192_000).contains(rate) else { throw ValidationError("--rate must be between 8000 and 192000 Hz, got \(rate)") }
    }

    func run() throws {
        compute.apply()
        signal(SIGPIPE, SIG_IGN)
        let engine = try model.load()
        let session = engine.makeSession(sampling: sampling.parameters(for: engine.config))
        var options = PipeRunner.Options()
        options.format = SampleFormat(rawValue: format)!
        options.rate = rate
        options.realtime = realtime
        let textHandle: FileHandle
        if let text {
            guard FileManager.default.createFile(atPath: text, contents: nil) , let h = FileHandle(forWritingAtPath: text) else {
                throw ValidationError("cannot write --text \(text)")
            }
            textHandle = h
        } else {
            textHandle = FileHandle.standardError
        }
        let runner = PipeRunner(processor: session, options: options) { token, seconds in
            guard let piece = engine.displayText(token) else { return }
            textHandle.write(String(format: "%8.2f\t%@\n", seconds, piece).data(using: .utf8)!)
        }
        let summary = try runner.run(input: STDIN_FILENO, output: STDOUT_FILENO)
        if let failure = session.failure { throw ValidationError("the model stopped: \(failure)") }
        if summary.trailingBytes > 0 {
            warn("warning: input ended with \(summary.trailingBytes) byte(s) that do not make a whole \(format) sample; ignored")
        }
        if let text { try? textHandle.close(); _ = text }
    }
}
