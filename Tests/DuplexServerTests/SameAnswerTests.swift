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
    private static func tinyEngine() throws -> EngineModel {
        var mimi = MimiConfig()
        mimi.dimension = 32
        mimi.filters = 4
        mimi.transformerHeads = 2
        mimi.transformerLayers = 1
        mimi.transformerFeedforward = 64
        mimi.codebookDimension = 16
        mimi.bins = 64
        mimi.numCodebooks = 8
        var lm = LMConfig.moshi7B
        lm.dim = 32; lm.numHeads = 2; lm.numLayers = 2; lm.context = 8
        lm.textCard = 50; lm.textCardOut = 50; lm.card = 64
        lm.depformerDim = 16; lm.depformerNumHeads = 2; lm.depformerNumLayers = 1
        lm.depformerDimFeedforward = Int(4.125 * 16)
        return try EngineModel(mimi: Mimi(store: WeightStore(randomSeed: 21), config: mimi),
                               lm: LMModel(store: WeightStore(randomSeed: 22), config: lm), tokenizer: nil, name: "tiny")
    }

    /// Sampled (not greedy), so the seed matters too.
    private let sampling: SamplingParameters = {
        var p = SamplingParameters()
        p.seed = 99
        return p
    }()

    func testPipeGenerateAndServeGiveTheSameAnswer() throws {
        let engine = try Self.tinyEngine()
        let frames = 12
        // What a client sends, and the PCM the server decodes from it: pipe and generate get that PCM.
        let messages = try encodedFrames(frames)
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
        var inFDs: [Int32] = [0, 0], outFDs: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&inFDs), 0)
        XCTAssertEqual(pipe(&outFDs), 0)
        let bytes = input.withUnsafeBytes { Array($0) }
        let writeEnd = inFDs[1]
        Thread {
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeBytes { write(writeEnd, $0.baseAddress! + offset, min(8192, bytes.count - offset)) }
                if n <= 0 { break }
                offset += n
            }
            close(writeEnd)
        }.start()
        let collector = FDCollector(fd: outFDs[0])
        let length = PCMStreamLength()
        var pipeText: [Int32] = []
        _ = try FrameLoop.runInline(processor: engine.makeSession(sampling: sampling),
                                    source: PCMStreamSource(fd: inFDs[0], format: .f32le, length: length),
                                    sink: PCMStreamSink(fd: outFDs[1], format: .f32le, length: length)) {
            $0.drainText { pipeText.append($0.token) }
        }
        close(outFDs[1])
        close(inFDs[0])
        let pipeOut = collector.wait().withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }

        XCTAssertEqual(pipeOut.count, input.count, "pipe: as many samples out as in")
        XCTAssertEqual(pipeOut, generateSink.samples, "pipe and generate: the same samples, bit for bit")
        XCTAssertEqual(pipeText, generateText)
        XCTAssertGreaterThan(pipeOut.map { abs($0) }.max() ?? 0, 0, "the model answered")

        // serve: the worker a websocket connection runs, fed the client's messages.
        let outputs = OutputLog()
        let sampling = self.sampling
        let model = ChatModel(makeSession: { _ in engine.makeSession(sampling: sampling) },
                              tokenText: { "<\($0)>" })
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

/// Reads a file descriptor to its end on its own thread.
final class FDCollector: @unchecked Sendable {
    private var bytes: [UInt8] = []
    private let done = DispatchSemaphore(value: 0)
    init(fd: Int32) {
        Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                if n <= 0 { break }
                bytes += buffer[0..<n]
            }
            close(fd)
            done.signal()
        }.start()
    }
    func wait() -> [UInt8] { done.wait(); return bytes }
}
