import DuplexAudio
import Foundation
import XCTest

final class SPSCRingTests: XCTestCase {
    func testFillDrainAndWrapAround() {
        let ring = SPSCRing<Float>(minimumCapacity: 5, zero: 0)
        XCTAssertEqual(ring.capacity, 8)
        var out = [Float](repeating: -1, count: 8)
        var next: Float = 0
        for round in 0..<20 {
            let chunk = (0..<(1 + round % 7)).map { _ -> Float in next += 1; return next }
            let wrote = ring.write(chunk)
            XCTAssertEqual(wrote, min(chunk.count, 8), "round \(round)")
            next -= Float(chunk.count - wrote)  // what did not fit is offered again next time
            let got = ring.read(into: &out, count: 8)
            XCTAssertEqual(got, wrote)
            XCTAssertEqual(Array(out[0..<got]), Array(chunk[0..<wrote]))
        }
    }

    func testFullRingRefusesAndEmptyRingGivesNothing() {
        let ring = SPSCRing<Int16>(minimumCapacity: 4, zero: 0)
        XCTAssertEqual(ring.write([1, 2, 3, 4, 5, 6]), 4)
        XCTAssertEqual(ring.availableToWrite, 0)
        var out = [Int16](repeating: 0, count: 6)
        XCTAssertEqual(ring.read(into: &out, count: 6), 4)
        XCTAssertEqual(Array(out[0..<4]), [1, 2, 3, 4])
        XCTAssertEqual(ring.read(into: &out, count: 6), 0)
        XCTAssertEqual(ring.skip(3), 0)
    }

    /// Two threads, a million values: every value arrives once, in order.
    func testConcurrentProducerConsumerKeepsOrder() {
        let ring = SPSCRing<Int32>(minimumCapacity: 1024, zero: 0)
        let total = 1_000_000
        let producer = Thread {
            var buffer = [Int32](repeating: 0, count: 97)
            var next: Int32 = 0
            while Int(next) < total {
                let n = min(buffer.count, total - Int(next))
                for i in 0..<n { buffer[i] = next + Int32(i) }
                var offset = 0
                while offset < n {
                    offset += buffer.withUnsafeBufferPointer { ring.write($0.baseAddress! + offset, count: n - offset) }
                }
                next += Int32(n)
            }
        }
        producer.start()
        var expected: Int32 = 0
        var buffer = [Int32](repeating: 0, count: 61)
        var mismatches = 0
        while Int(expected) < total {
            let got = ring.read(into: &buffer, count: buffer.count)
            for i in 0..<got where buffer[i] != expected + Int32(i) { mismatches += 1 }
            expected += Int32(got)
        }
        XCTAssertEqual(mismatches, 0)
        XCTAssertEqual(Int(expected), total)
    }
}
