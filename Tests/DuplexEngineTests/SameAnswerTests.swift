import DuplexAudio
import DuplexCore
import DuplexEngine
@testable import DuplexServer
import Foundation
import XCTest

/// Every use is an adapter around the one pipeline and Session, so the same input and seed give
/// the same answer through `pipe` (file descriptors, inline loop), `generate` (in memory) and
/// `serve` (a websocket session's worker, Ogg Opus both ways), in process.
final class SameAnswerTests: XCTestCase {
    func testPipeGenerateAndServeGiveTheSameAnswer() throws {
        let engine = try tinyEngine(mimiSeed: 21, lmSeed: 22)
        let sampling: SamplingParameters = {   // sampled, not greedy: the seed matters too
            var p = SamplingParameters()
            p.seed = 99
            return p
        }()
        // What a client sends, and the PCM the server decodes from it: pipe and generate get that PCM.
        let frames = 12
        let voice = (0..<(frames * 1920)).map { i in
            let t = Float(i) / 24_000
            return 0.3 * sinf(2 * .pi * 150 * t) * (0.5 + 0.5 * sinf(2 * .pi * 3 * t))
        }
        let client = try OggOpusWriter()
        let messages = (0..<frames).map { f in client.append(Array(voice[(f * 1920)..<((f + 1) * 1920)])) }
        let reader = try OggOpusReader()
        var heard: [Float] = []
        for m in messages { heard += try reader.append(m) }
        let whole = heard.count / 1920
        XCTAssertGreaterThanOrEqual(whole, frames - 1)
        let input = Array(heard.prefix(whole * 1920))

        // generate: in memory, inline.
        let generateSink = CollectingSink()
        var generateText: [Int32] = []
        _ = try FrameLoop.runInline(processor: engine.makeSession(sampling: sampling), source: SignalSource(input), sink: generateSink) {
            $0.drainText { generateText.append($0.token) }
        }

        // pipe: f32le through real file descriptors.
        let piped = try pipeThrough(input.withUnsafeBytes { Array($0) }, processor: engine.makeSession(sampling: sampling), format: .f32le)
        let pipeOut = piped.output.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertEqual(pipeOut.count, input.count, "pipe: as many samples out as in")
        XCTAssertEqual(pipeOut, generateSink.samples, "pipe and generate: the same samples, bit for bit")
        XCTAssertEqual(piped.text.map(\.0), generateText)
        XCTAssertGreaterThan(pipeOut.map { abs($0) }.max() ?? 0, 0, "the model answered")

        // serve: the worker a websocket connection runs, fed the client's messages.
        let outputs = OutputLog()
        let model = ChatModel(makeSession: { _ in engine.makeSession(sampling: sampling) }, tokenText: { "<\($0)>" })
        let worker = SessionWorker(label: "same-answer", model: model, metrics: ServerMetrics(frameNanoseconds: 80_000_000),
                                   limits: SessionWorker.Limits(), sink: { outputs.append($0) })
        worker.start(parameters: SessionParameters())
        for m in messages { XCTAssertTrue(worker.enqueue(m)) }
        let deadline = Date().addingTimeInterval(20)
        while outputs.frames.count < whole && Date() < deadline { usleep(5000) }
        worker.stop()
        let served = outputs.frames
        XCTAssertEqual(served.count, whole, "one answer per whole frame")
        XCTAssertEqual(served.compactMap(\.text).joined(), generateText.map { "<\($0)>" }.joined(), "the same text")
        // Its audio is the same PCM, Opus-encoded by the same deterministic encoder.
        let writer = try OggOpusWriter()
        let expected = (0..<whole).map { f in writer.append(Array(generateSink.samples[(f * 1920)..<((f + 1) * 1920)])) }
        XCTAssertEqual(served.map(\.audio), expected, "serve: the same answer, as the same Ogg Opus bytes")
    }
}

final class OutputLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [(audio: [UInt8], text: String?)] = []
    func append(_ output: SessionWorker.Output) {
        if case .frame(let audio, let text) = output { lock.withLock { stored.append((audio, text)) } }
    }
    var frames: [(audio: [UInt8], text: String?)] { lock.withLock { stored } }
}
