import DuplexEngine
import XCTest

final class LatencyTests: XCTestCase {
    func testBreakdownTermsAddUpToTheTotal() {
        let ms: UInt64 = 1_000_000
        var f = FrameTimestamps()
        f.inputStart = 1000 * ms
        f.inputEnd = 1080 * ms
        var r = FrameTimestamps()
        r.inputStart = 1080 * ms
        r.inputEnd = 1160 * ms
        r.dequeued = 1162 * ms
        r.encoded = 1170 * ms
        r.temporalDone = 1180 * ms
        r.lmDone = 1185 * ms
        r.decoded = 1195 * ms
        r.outputStart = 1197 * ms
        r.deviceBuffer = 20 * ms
        let b = LatencyBreakdown(frame: f, response: r)
        XCTAssertEqual(b.framing, 80)
        XCTAssertEqual(b.acousticDelay, 80)
        XCTAssertEqual(b.queueing, 2)
        XCTAssertEqual(b.encode, 8)
        XCTAssertEqual(b.temporal, 10)
        XCTAssertEqual(b.depformer, 5)
        XCTAssertEqual(b.decode, 10)
        XCTAssertEqual(b.output, 2)
        XCTAssertEqual(b.deviceBuffer, 20)
        XCTAssertEqual(b.total, 217)
        let sum = b.framing + b.acousticDelay + b.queueing + b.encode + b.temporal + b.depformer + b.decode + b.output + b.deviceBuffer
        XCTAssertEqual(sum, b.total, accuracy: 1e-9)
    }

    func testNearestRankPercentiles() {
        var p = Percentiles(capacity: 1000)
        for v in 1...100 { p.record(Double(v)) }
        XCTAssertEqual(p.percentile(50), 50)
        XCTAssertEqual(p.percentile(95), 95)
        XCTAssertEqual(p.percentile(99), 99)
        XCTAssertEqual(p.percentile(100), 100)
        XCTAssertEqual(p.maximum, 100)
        XCTAssertEqual(p.mean, 50.5)
    }

    func testKeepsTheMostRecentValuesBeyondCapacity() {
        var p = Percentiles(capacity: 10)
        for v in 1...25 { p.record(Double(v)) }
        XCTAssertEqual(p.count, 25)
        XCTAssertEqual(p.percentile(0.1), 16)  // only 16…25 are kept
        XCTAssertEqual(p.maximum, 25)
    }
}
