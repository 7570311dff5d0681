import DuplexCore
import Foundation
import XCTest

final class CheckpointInfoTests: XCTestCase {
    func testRecognisesKyutaisCheckpointsByTheirNames() {
        let mimi = ["encoder.model.0.conv.conv.weight", "quantizer.rvq_first.vq.layers.0._codebook.embedding_sum"]
        XCTAssertEqual(CheckpointKind.detect(names: mimi), .mimi)
        XCTAssertEqual(CheckpointKind.detect(names: ["encoder.model.0.conv.conv.weight_v", "quantizer.rvq_first.x"]), .mimi)
        XCTAssertEqual(CheckpointKind.detect(names: ["encoder.model.0.conv.conv.weight"]), .unknown, "no quantizer: not Mimi")
        let lm = ["text_emb.weight", "out_norm.alpha", "depformer_in.0.weight", "depformer.layers.0.gating.0.linear_in.weight"]
        XCTAssertEqual(CheckpointKind.detect(names: lm), .moshiLM)
        XCTAssertEqual(CheckpointKind.detect(names: ["text_emb.weight", "out_norm.alpha"]), .moshiLM)
        let candle = ["text_emb.weight", "out_norm.alpha", "depformer.0.linear_in.weight", "depformer.0.emb.weight"]
        XCTAssertEqual(CheckpointKind.detect(names: candle), .moshiLMCandle)
        XCTAssertEqual(CheckpointKind.detect(names: [String]()), .unknown)
    }

    private func file(_ name: String, _ build: (inout SafetensorsWriter) -> Void) throws -> SafetensorsFile {
        var w = SafetensorsWriter(metadata: ["k": "v"])
        build(&w)
        let path = temporaryPath(name)
        try w.write(to: path)
        return try SafetensorsFile(path: path)
    }

    func testSummaryCountsParametersAndBytesByDType() throws {
        let f = try file("summary.safetensors") {
            $0.add("a", Tensor(zeros: [3, 4]), as: .bf16)
            $0.add("b", Tensor(zeros: [5]))
            $0.add("c", int64: [1, 2], shape: [2])
        }
        let s = CheckpointSummary(file: f)
        XCTAssertEqual(s.tensorCount, 3)
        XCTAssertEqual(s.parametersByDType, [.bf16: 12, .f32: 5, .i64: 2])
        XCTAssertEqual(s.parameterCount, 19)
        XCTAssertEqual(s.bytes, 24 + 20 + 16)
        XCTAssertEqual(s.metadata, ["k": "v"])
        XCTAssertEqual(s.kind, .unknown)
    }

    /// Progress comes within a large tensor too (one tensor of a real checkpoint is hundreds of MB),
    /// never goes backwards and ends at the total; NaN and Inf are counted per tensor.
    func testScanCountsPoisonAndReportsProgressWithinTensors() throws {
        let n = 600_000
        var big = (0..<n).map { Float($0 % 256) - 128 }      // exact in bf16
        big[n - 1] = .infinity
        let f = try file("scan.safetensors") {
            $0.add("big", Tensor(shape: [n], data: big), as: .bf16)
            $0.add("small", Tensor(shape: [3], data: [.nan, 7, -.infinity]))
            $0.add("ints", int64: [Int64.max], shape: [1])
        }
        var calls: [(Int, Int)] = []
        let scan = ValueScan.scan(f) { calls.append(($0, $1)) }
        XCTAssertEqual(scan.values, n + 3)
        XCTAssertEqual(scan.nanCount, 1)
        XCTAssertEqual(scan.infCount, 2)
        XCTAssertEqual(scan.minimum, -128)
        XCTAssertEqual(scan.maximum, 127)
        XCTAssertEqual(scan.badTensors, ["big", "small"])
        XCTAssertGreaterThanOrEqual(calls.count, 3, "several updates within the large tensor")
        XCTAssertTrue(calls.allSatisfy { $0.1 == 2 * n + 12 })
        XCTAssertEqual(calls.last?.0, 2 * n + 12)
        XCTAssertTrue(zip(calls, calls.dropFirst()).allSatisfy { $0.0 <= $1.0 })
    }
}
