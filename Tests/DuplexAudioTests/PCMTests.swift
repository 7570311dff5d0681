import DuplexAudio
import XCTest

final class PCMTests: XCTestCase {
    func testSampleFormatSizes() {
        XCTAssertEqual(SampleFormat.s16le.bytesPerSample, 2)
        XCTAssertEqual(SampleFormat(rawValue: "f32le")?.bytesPerSample, 4)
        XCTAssertNil(SampleFormat(rawValue: "s24le"))
    }
}
