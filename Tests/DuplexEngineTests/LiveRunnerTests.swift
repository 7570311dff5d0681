import Foundation
import DuplexEngine
import XCTest

/// The harness on real threads with the stand-in model: frames flow, latency terms are sane.
final class LiveRunnerTests: XCTestCase {
    func testFlatOutRunProcessesEveryFrameWithoutLoss() throws {
        var options = LiveRunner.Options()
        options.frames = 40
        options.warmupFrames = 2
        options.realtime = false
        let signal = (0..<(1920 * 10)).map { Float($0 % 1920) / 1920 }
        let report = try LiveRunner(processor: EchoProcessor(), signal: signal, options: options).run()
        XCTAssertEqual(report.frames, 39, "every measured frame pairs with the next one's response")
        XCTAssertEqual(report.counters.overruns, 0)
        XCTAssertLessThan(report.realTimeFactor, 1)
    }

    func testPacedRunShowsTheFramingAndAcousticDelay() throws {
        var options = LiveRunner.Options()
        options.frames = 20
        options.warmupFrames = 3
        let report = try LiveRunner(processor: EchoProcessor(), signal: [], options: options).run()
        XCTAssertEqual(report.frames, 19)
        // Floor: 80 ms framing + 80 ms acoustic delay; the stand-in computes in microseconds, the
        // virtual speaker adds up to one 20 ms period, and a loaded CI machine some scheduling slack.
        let p50 = report.latency.percentile(50)
        XCTAssertGreaterThanOrEqual(p50, 159)
        XCTAssertLessThan(p50, 160 + 20 + 30)
        XCTAssertEqual(report.stages.first { $0.name == "encode" }?.values.count, 19)
    }
}

final class BenchReportTests: XCTestCase {
    func testJSONCarriesTheAgreedKeysAndParses() throws {
        var options = LiveRunner.Options()
        options.frames = 12
        options.warmupFrames = 1
        options.realtime = false
        let report = try LiveRunner(processor: EchoProcessor(), signal: [], options: options).run()
        let object = try JSONSerialization.jsonObject(with: Data(report.json().utf8)) as? [String: Any]
        let json = try XCTUnwrap(object)
        for key in ["latency_ms", "stages_ms", "real_time_factor", "deadline_misses", "allocations_per_frame", "peak_rss_bytes", "frames"] {
            XCTAssertNotNil(json[key], key)
        }
        let latency = try XCTUnwrap(json["latency_ms"] as? [String: Any])
        for key in ["p50", "p95", "p99", "max"] { XCTAssertNotNil(latency[key] as? Double, key) }
        let stages = try XCTUnwrap(json["stages_ms"] as? [String: [String: Any]])
        XCTAssertNotNil(stages["encode"]?["p95"] as? Double)
        XCTAssertEqual(json["frames"] as? Int, report.frames)

        let svg = report.svg(title: "test <run>")
        XCTAssertTrue(svg.hasPrefix("<svg"))
        XCTAssertTrue(svg.contains("test &lt;run&gt;"))
        XCTAssertTrue(svg.contains("<polyline"))
        XCTAssertTrue(report.table(title: "t").contains("mic→speaker"))
    }
}
