import ArgumentParser
import DuplexAudio
import DuplexEngine
import Foundation

/// `--aec/--ns/--agc/--high-pass/--aec-filter-ms`: what runs on the microphone before the model
/// hears it. `talk` cancels echo by default; `bench` and `pipe` leave the input untouched unless
/// asked (so their figures and bytes stay comparable), `duplex aec` works on files.
struct CaptureOptions: ParsableArguments {
    @Option(help: "Echo cancellation: webrtc (WebRTC's audio processing module, the strongest), speex (SpeexDSP, lighter) or off. Default: webrtc for talk and aec, off for bench and pipe.")
    var aec: String?

    @Option(help: "Noise suppression: on or off (default: on with an echo canceller; SpeexDSP's residual-echo suppression works only with it).")
    var ns: String?

    @Option(help: "Automatic gain control: on or off (default: on with webrtc; WebRTC's adaptive digital gain with a limiter).")
    var agc: String?

    @Option(name: .customLong("high-pass"), help: "80 Hz high-pass filter: on or off (default: on with webrtc; WebRTC's only).")
    var highPass: String?

    @Option(name: .customLong("aec-filter-ms"), help: "With --aec speex: the echo tail its filter spans after the delay duplex finds, in ms (default 200).")
    var filterMilliseconds: Int?

    /// Any of the options given on the command line.
    var given: Bool { aec != nil || ns != nil || agc != nil || highPass != nil || filterMilliseconds != nil }

    func validate() throws {
        if let aec, EchoCanceller(rawValue: aec) == nil { throw ValidationError("--aec \(aec): use webrtc, speex or off") }
        for (name, value) in [("--ns", ns), ("--agc", agc), ("--high-pass", highPass)] {
            if let value, value != "on" && value != "off" { throw ValidationError("\(name) \(value): use on or off") }
        }
        if let filterMilliseconds {
            if aec != EchoCanceller.speex.rawValue { throw ValidationError("--aec-filter-ms sets SpeexDSP's filter: add --aec speex") }
            if !(20...1000).contains(filterMilliseconds) { throw ValidationError("--aec-filter-ms \(filterMilliseconds): use 20…1000 ms") }
        }
        if aec == EchoCanceller.speex.rawValue && highPass == "on" {
            throw ValidationError("--high-pass is WebRTC's filter: use --aec webrtc, or leave it off with --aec speex")
        }
    }

    /// The processing asked for, with `defaultCanceller` when --aec is not given.
    func resolve(defaultCanceller: EchoCanceller) -> CaptureProcessingOptions {
        let canceller = aec.flatMap(EchoCanceller.init(rawValue:)) ?? defaultCanceller
        func flag(_ value: String?) -> Bool? { value.map { $0 == "on" } }
        return CaptureProcessingOptions(echoCanceller: canceller, noiseSuppression: flag(ns), gainControl: flag(agc), highPass: flag(highPass),
                                        speexFilterMilliseconds: filterMilliseconds ?? 200)
    }

    /// Wraps a live or piped source and sink with the processing, or warns why it cannot (a
    /// missing library, devices that report no delay) and returns them as they were: a
    /// conversation without echo cancellation beats none.
    static func wrap(source: FrameSource, sink: FrameSink, options: CaptureProcessingOptions,
                     alignment: EchoReference.Alignment) -> (source: FrameSource, sink: FrameSink, processing: EchoCancellation?, offBecause: String?) {
        guard !options.isIdentity else { return (source, sink, nil, nil) }
        switch EchoCancellation.make(source: source, sink: sink, options: options, alignment: alignment) {
        case .success(let processing):
            return (processing.source, processing.sink, processing, nil)
        case .failure(let error):
            warn("warning: capture processing (\(options.summary)) is off: \(error)")
            return (source, sink, nil, error.description)
        }
    }
}

/// `--room SPEC`: a simulated room between the virtual loudspeaker and microphone (bench, pipe),
/// so that echo cancellation can be measured with no sound card.
struct RoomOption: ParsableArguments {
    @Option(help: "Put a simulated room between the loudspeaker and the microphone: what the model says comes back as echo, mixed into the input. SPEC is comma-separated, e.g. delay=60ms,rt60=400ms,echo=-6dB,noise=-60dB,drift=5ppm,jump=8s:40ms,seed=1 (any key may be left out; `default` takes them all).")
    var room: String?

    func parameters() throws -> RoomParameters? {
        guard let room else { return nil }
        do { return try RoomParameters(spec: room) } catch { throw ValidationError("--room: \(error)") }
    }

    /// `source` becomes the near-end talker in the room, `sink` the loudspeaker whose echo it hears.
    static func insert(_ parameters: RoomParameters, source: FrameSource, sink: FrameSink,
                       alignment: EchoReference.Alignment) -> (source: FrameSource, sink: FrameSink, room: RoomSource) {
        let reference = EchoReference(alignment: alignment)
        let tap = EchoReferenceSink(sink, references: [reference])
        let room = RoomSource(near: source, room: SimulatedRoom(parameters), reference: reference)
        return (room, tap, room)
    }
}
