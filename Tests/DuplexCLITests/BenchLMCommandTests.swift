import Foundation
import XCTest

/// `duplex bench-lm --json` on the embedded default model: one line of valid JSON (parsed by
/// JSONSerialization, which refuses a bare `nan`), non-finite figures as null, and with
/// `--context-fill` the filled context's figures beside the fresh ones.
final class BenchLMCommandTests: XCTestCase {
    private var defaultModel: String { packageRoot.appendingPathComponent("models/default").path }

    private func parse(_ r: CLIRun, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        let lines = r.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "one JSON object on one line: \(r.stdout)", file: file, line: line)
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
        return try XCTUnwrap(object as? [String: Any], "not a JSON object: \(r.stdout)", file: file, line: line)
    }

    func testJSONIsValidEvenWithoutAFloor() throws {
        // --no-floor leaves the bandwidth figures undefined: they must come out as null, not nan.
        let r = try runDuplex(["bench-lm", "--model", defaultModel, "--steps", "2", "--warmup", "1", "--json", "--no-floor", "-t", "1"])
        let json = try parse(r)
        XCTAssertFalse(r.stdout.lowercased().contains("nan"), r.stdout)
        XCTAssertTrue(json["sgemv_gbs"] is NSNull, "\(json["sgemv_gbs"] ?? "absent")")
        XCTAssertTrue(json["floor_ms"] is NSNull, "\(json["floor_ms"] ?? "absent")")
        XCTAssertEqual(json["steps"] as? Int, 2)
        XCTAssertEqual(json["context_fill"] as? Int, 0)
        XCTAssertNil(json["filled"])
        let ms = try XCTUnwrap(json["ms_per_step_median"] as? Double)
        XCTAssertTrue(ms > 0 && ms.isFinite)
        XCTAssertEqual(json["model"] as? String, defaultModel)
    }

    func testContextFillReportsBothContexts() throws {
        let r = try runDuplex(["bench-lm", "--model", defaultModel, "--steps", "1", "--warmup", "1", "--json", "--no-floor",
                               "--context-fill", "3000", "-t", "1"])
        let json = try parse(r)
        XCTAssertEqual(json["context_fill"] as? Int, 3000)
        let layers = try XCTUnwrap(json["num_layers"] as? Int), context = try XCTUnwrap(json["context"] as? Int)
        XCTAssertEqual(context, 3000)
        XCTAssertEqual(json["kv_entries_per_step"] as? Int, 2 * layers, "the fresh step at position 1 reads two entries a layer")
        let filled = try XCTUnwrap(json["filled"] as? [String: Any], r.stdout)
        XCTAssertEqual(filled["fill"] as? String, "synthetic")
        XCTAssertEqual(filled["first_timed_position"] as? Int, 3001)
        XCTAssertEqual(filled["kv_entries_per_step"] as? Int, context * layers, "a full ring in every layer")
        XCTAssertTrue((filled["ms_per_step_median"] as? Double).map { $0 > 0 } ?? false, "\(filled)")
        XCTAssertTrue((filled["temporal_ms_median"] as? Double).map { $0 > 0 } ?? false, "\(filled)")
        XCTAssertTrue(filled["floor_ms"] is NSNull)
    }

    /// --kv-cache names the rings' element type in the report, and the bytes a full context
    /// reads follow it: bf16 half of f32, q8 (34 bytes per 32 values) a little over a quarter.
    func testKVCacheTypeIsReportedAndSetsTheBytesRead() throws {
        var bytes: [String: Int] = [:]
        for type in ["f32", "bf16", "q8"] {
            let r = try runDuplex(["bench-lm", "--model", defaultModel, "--steps", "1", "--warmup", "0", "--json", "--no-floor",
                                   "--context-fill", "3000", "--kv-cache", type, "-t", "1"])
            let json = try parse(r)
            XCTAssertEqual(json["kv_cache"] as? String, type)
            let filled = try XCTUnwrap(json["filled"] as? [String: Any], r.stdout)
            bytes[type] = try XCTUnwrap(filled["kv_bytes_per_step"] as? Int)
        }
        let (f32, bf16, q8) = (bytes["f32"]!, bytes["bf16"]!, bytes["q8"]!)
        XCTAssertEqual(bf16 * 2, f32)
        XCTAssertEqual(Double(q8) / Double(f32), 34.0 / 128, accuracy: 1e-9, "q8: 34 bytes per 32 values (head dim 64)")
        let table = try runDuplex(["bench-lm", "--model", defaultModel, "--steps", "1", "--warmup", "0", "--no-floor", "-t", "1"])
        XCTAssertTrue(table.stdout.contains("kv_cache") && table.stdout.contains("bf16"), "the default, named: \(table.stdout)")
    }

    func testAnInvalidKVCacheTypeNamesTheValidOnes() throws {
        for command in [["bench-lm", "--model", defaultModel], ["generate", "--input-codes", "x.npy", "--output-codes", "y.npy"],
                        ["pipe"], ["bench"], ["serve"], ["talk"]] {
            let r = try runDuplex(command + ["--kv-cache", "f16"])
            XCTAssertNotEqual(r.status, 0, "\(command)")
            XCTAssertTrue(r.stderr.contains("'f16'") && r.stderr.contains("'f32', 'bf16' or 'q8'"), "\(command): \(r.stderr)")
        }
        let r = try runDuplex(["talk", "--connect", "ws://127.0.0.1:1", "--kv-cache", "q8"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--kv-cache sets how a local model runs"), r.stderr)
    }

    func testExactFillNeedsAContextFill() throws {
        let r = try runDuplex(["bench-lm", "--model", defaultModel, "--exact-fill"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--exact-fill needs --context-fill"), r.stderr)
    }
}
