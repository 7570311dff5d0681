@testable import DuplexAudio
import Foundation
import Synchronization
import XCTest
@testable import DuplexEngine

/// A model stand-in that speaks: it answers every frame with the next frame of a recording,
/// whatever it hears, and keeps what it heard (the microphone after the canceller).
final class SpeakingProcessor: FrameProcessor, @unchecked Sendable {
    let frameSize = 1920
    private let speech: [Float]
    private var position = 0
    private(set) var heard: [Float] = []

    init(speech: [Float], seconds: Int) {
        self.speech = speech
        heard.reserveCapacity(seconds * 24_000 + 4 * 1920)
    }

    func process(_ input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, stamps: inout FrameTimestamps,
                 clock: any FrameClock) -> Int32? {
        heard.append(contentsOf: UnsafeBufferPointer(start: input, count: frameSize))
        for i in 0..<frameSize { output[i] = speech[(position + i) % speech.count] }
        position += frameSize
        return nil
    }
}

/// A source whose device stops reporting its delay after some reads.
final class DelayLosingSource: FrameSource {
    private let inner: SignalSource
    private var reads = 0
    let reportsUntil: Int
    init(_ signal: [Float], reportsUntil: Int) {
        inner = SignalSource(signal)
        self.reportsUntil = reportsUntil
    }
    var pacing: SourcePacing { .asFastAsRead }
    var captureDelay: UInt64? { reads < reportsUntil ? 0 : nil }
    func read(into buffer: UnsafeMutablePointer<Float>, count: Int) throws -> Bool {
        reads += 1
        return try inner.read(into: buffer, count: count)
    }
}

final class SilentDelaySink: FrameSink {
    var isPaced: Bool { false }
    var reportedOutputDelay: UInt64? { nil }
    func write(_ samples: UnsafePointer<Float>, count: Int) throws -> Bool { true }
}

/// The canceller on the engine's loops: between a (simulated) room's microphone and the model,
/// its reference the tapped loudspeaker, inline (pipe) and on live threads in real time (talk,
/// bench).
final class EchoCancellationLoopTests: XCTestCase {
    private func speech(_ name: String) throws -> [Float] {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/aec/\(name).wav").path
        guard FileManager.default.fileExists(atPath: path) else {
            XCTFail("missing speech fixture \(path): run tools/aec/make_speech.sh")
            throw CocoaError(.fileNoSuchFile)
        }
        let wav = try WAV.read(path)
        return Resampler.resample(wav.mono(), from: wav.sampleRate, to: 24_000)
    }

    /// Runs `seconds` of a pipe-style inline loop: silence from the person, the stand-in model
    /// speaking, its echo through `roomSpec`, and `options` cleaning the microphone.
    private func inline(_ options: CaptureProcessingOptions, roomSpec: String, seconds: Int) throws -> (heard: [Float], processing: EchoCancellation?) {
        let model = SpeakingProcessor(speech: try speech("far"), seconds: seconds)
        let alignment = EchoReference.Alignment.streamPosition(latencyFrames: 1920)
        let reference = EchoReference(alignment: alignment)
        let tap = EchoReferenceSink(CollectingSink(), references: [reference])
        var source: FrameSource = RoomSource(near: SignalSource([Float](repeating: 0, count: seconds * 24_000)),
                                             room: SimulatedRoom(try RoomParameters(spec: roomSpec)), reference: reference)
        var sink: FrameSink = tap
        var processing: EchoCancellation?
        if !options.isIdentity {
            let made = try EchoCancellation.make(source: source, sink: sink, options: options, alignment: alignment).get()
            (source, sink, processing) = (made.source, made.sink, made)
        }
        _ = try FrameLoop.runInline(processor: model, source: source, sink: sink)
        return (model.heard, processing)
    }

    func testInlineLoopCancelsTheModelsOwnEcho() throws {
        let room = "delay=60ms,rt60=400ms,echo=-3dB,noise=-60dB"
        let raw = try inline(.off, roomSpec: room, seconds: 10).heard
        for (options, gate) in [(CaptureProcessingOptions(echoCanceller: .webrtc), 25.0), (CaptureProcessingOptions(echoCanceller: .speex), 15.0)] {
            let (heard, processing) = try inline(options, roomSpec: room, seconds: 10)
            XCTAssertEqual(heard.count, raw.count)
            let erle = EchoMetrics.erle(microphone: raw, output: heard, range: 2 * 24_000..<heard.count)
            let status = try XCTUnwrap(processing).status
            print(String(format: "inline loop | %@ | ERLE after 2 s %.1f dB (its own meter %.1f dB) | echo delay %d ms",
                         options.summary, erle, status.settledErleDecibels, status.echoDelayMilliseconds))
            XCTAssertGreaterThanOrEqual(erle, gate, options.summary)
            XCTAssertGreaterThanOrEqual(Double(status.settledErleDecibels), gate, "the meter talk shows agrees")
            // The room's 60 ms: the stream-position alignment already accounts for the frame the
            // answer takes to come back.
            XCTAssertEqual(status.echoDelayMilliseconds, 60, accuracy: 1)
        }
    }

    /// The live loop as talk runs it: capture, model and playback on their own threads, paced in
    /// real time by a virtual microphone and speaker with the room between them; the reference is
    /// lined up by the clock, as with a sound card.
    func testLiveLoopCancelsInRealTime() throws {
        let seconds = 6
        let model = SpeakingProcessor(speech: try speech("far"), seconds: seconds + 2)
        let (roomSource, roomSink, _) = insertRoom("delay=40ms,rt60=300ms,echo=-3dB,noise=-60dB",
                                                   near: SignalSource([Float](repeating: 0, count: 24_000), loop: true, realtime: true),
                                                   speaker: VirtualSpeaker())
        let processing = try EchoCancellation.make(source: roomSource, sink: roomSink, options: CaptureProcessingOptions(echoCanceller: .webrtc),
                                                   alignment: .clock).get()
        let loop = LiveLoop(processor: model, source: processing.source, sink: processing.sink)
        let started = Date()
        _ = try loop.run(shouldStop: { Date().timeIntervalSince(started) > Double(seconds) })
        let status = processing.status
        print(String(format: "live loop | webrtc | ERLE after 2 s %.1f dB, last second %.1f dB | echo delay %d ms | %d realignment(s) | %@",
                     status.settledErleDecibels, status.erleDecibels, status.echoDelayMilliseconds, processing.source.reference.realignments,
                     processing.summaryText))
        XCTAssertGreaterThanOrEqual(Double(status.settledErleDecibels), 25)
        // The virtual devices report what they buffer, so all the alignment leaves is the room's
        // delay.
        XCTAssertEqual(Double(status.echoDelayMilliseconds), 40, accuracy: 6)
        XCTAssertTrue(processing.statusText.hasPrefix("aec webrtc: echo"), processing.statusText)
        XCTAssertGreaterThan(processing.source.drainFrameCosts().count, (seconds - 1) * 12)
    }

    private func insertRoom(_ spec: String, near: FrameSource, speaker: FrameSink) -> (FrameSource, FrameSink, RoomSource) {
        let reference = EchoReference(alignment: .clock)
        let tap = EchoReferenceSink(speaker, references: [reference])
        let room = RoomSource(near: near, room: SimulatedRoom(try! RoomParameters(spec: spec)), reference: reference)
        return (room, tap, room)
    }

    func testDevicesThatReportNoDelayFallBackWithTheReason() throws {
        let voice = [Float](repeating: 0.1, count: 24_000)
        let noCaptureDelay = EchoCancellation.make(source: DelayLosingSource(voice, reportsUntil: 0), sink: CollectingSink(),
                                                   options: CaptureProcessingOptions(echoCanceller: .webrtc), alignment: .clock)
        guard case .failure(let capture) = noCaptureDelay else { return XCTFail("a capture device without a delay was accepted") }
        XCTAssertTrue(capture.description.contains("capture device reports no delay"), capture.description)
        let noPlaybackDelay = EchoCancellation.make(source: SignalSource(voice), sink: SilentDelaySink(),
                                                    options: CaptureProcessingOptions(echoCanceller: .speex), alignment: .clock)
        guard case .failure(let playback) = noPlaybackDelay else { return XCTFail("a playback device without a delay was accepted") }
        XCTAssertTrue(playback.description.contains("playback device reports no delay"), playback.description)
        // Pipes line up by position and need no delay.
        XCTAssertNoThrow(try EchoCancellation.make(source: DelayLosingSource(voice, reportsUntil: 0), sink: SilentDelaySink(),
                                                   options: CaptureProcessingOptions(echoCanceller: .webrtc), alignment: .streamPosition(latencyFrames: 1920)).get())
    }

    /// A device that stops reporting its delay mid-run: the microphone passes through untouched
    /// from then on (never stuck, never silenced), and the reason is kept for the status line.
    func testADelayLostMidRunPassesTheMicrophoneThrough() throws {
        let voice = (0..<(4 * 24_000)).map { Float(sin(Double($0) * 0.05)) * 0.3 }
        let processing = try EchoCancellation.make(source: DelayLosingSource(voice, reportsUntil: 10), sink: CollectingSink(),
                                                   options: CaptureProcessingOptions(echoCanceller: .webrtc), alignment: .clock).get()
        var frame = [Float](repeating: 0, count: 1920)
        var heard: [Float] = []
        while try frame.withUnsafeMutableBufferPointer({ try processing.source.read(into: $0.baseAddress!, count: 1920) }) {
            heard += frame
        }
        XCTAssertEqual(heard.count, voice.count)
        XCTAssertEqual(Array(heard[(10 * 1920)...]), Array(voice[(10 * 1920)...]), "after the delay is lost the microphone is untouched")
        XCTAssertEqual(processing.source.fallbackReason, "the capture device stopped reporting its delay")
        XCTAssertTrue(processing.statusText.contains("aec off (the capture device stopped reporting its delay)"), processing.statusText)
    }

    /// The same through ALSA (file and null plugins): the devices report their delays and the
    /// canceller starts; a capture device whose `snd_pcm_delay` fails is refused with the reason.
    func testAnALSADeviceWithoutADelayIsRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("duplex-aec-alsa-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let input = dir.appendingPathComponent("in.raw").path
        XCTAssertTrue(FileManager.default.createFile(atPath: input, contents: Data(count: 48_000)))
        let configuration = """
            pcm.aec_capture { type file; slave.pcm "aec_null"; file "/dev/null"; infile "\(input)"; format "raw" }
            pcm.aec_playback { type file; slave.pcm "aec_null"; file "/dev/null"; format "raw" }
            pcm.aec_null { type null }
            """
        let device = try ALSAAudioDevice(input: "aec_capture", output: "aec_playback", configuration: configuration)
        XCTAssertNoThrow(try EchoCancellation.make(source: device, sink: device, options: CaptureProcessingOptions(echoCanceller: .webrtc), alignment: .clock).get())
        device.capture.delayUnavailableForTesting = true
        guard case .failure(let error) = EchoCancellation.make(source: device, sink: device, options: CaptureProcessingOptions(echoCanceller: .webrtc), alignment: .clock) else {
            return XCTFail("a capture device that reports no delay was accepted")
        }
        XCTAssertTrue(error.description.contains("capture device reports no delay"), error.description)
    }
}
