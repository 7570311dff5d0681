import DuplexAudio
import XCTest

final class WAVTests: XCTestCase {
    func testPCM16RoundTripKeepsSamplesWithinOneStep() throws {
        let samples: [Float] = (0..<1000).map { sinf(Float($0) * 0.05) * 0.8 }
        let wav = WAV(sampleRate: 24000, channels: 1, samples: samples)
        let back = try WAV.decode(wav.encoded(.pcm16))
        XCTAssertEqual(back.sampleRate, 24000)
        XCTAssertEqual(back.channels, 1)
        XCTAssertEqual(back.samples.count, samples.count)
        for (a, b) in zip(back.samples, samples) { XCTAssertEqual(a, b, accuracy: 0.5 / 32768) }
    }

    func testFloatStereoRoundTripIsExactAndDownmixes() throws {
        let samples: [Float] = [0.5, -0.5, 0.25, 0.75, -1, 1]
        let wav = WAV(sampleRate: 48000, channels: 2, samples: samples)
        let back = try WAV.decode(wav.encoded(.float32))
        XCTAssertEqual(back, wav)
        XCTAssertEqual(back.mono(), [0, 0.5, 0])
    }

    func testGarbageIsRejectedWithAMessage() {
        XCTAssertThrowsError(try WAV.decode(Data("hello world, not audio".utf8))) { error in
            XCTAssertTrue("\(error)".contains("not a WAV file"))
        }
        XCTAssertThrowsError(try WAV.decode(Data()))
    }

    func testClampsOutOfRangeAndNaNWhenEncoding() {
        XCTAssertEqual(PCM.int16(from: 2), 32767)
        XCTAssertEqual(PCM.int16(from: -2), -32768)
        XCTAssertEqual(PCM.int16(from: .nan), 0)
    }
}
