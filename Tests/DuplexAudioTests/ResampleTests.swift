import DuplexAudio
import Foundation
import XCTest

/// The windowed-sinc resampler against signals whose resampled form is known exactly.
final class ResampleTests: XCTestCase {
    private func sine(_ hz: Double, rate: Int, count: Int, phase: Double = 0.3) -> [Float] {
        (0..<count).map { Float(0.8 * sin(2 * Double.pi * hz * Double($0) / Double(rate) + phase)) }
    }

    /// In-band tones come out as the same tone sampled at the new rate (edges aside).
    func testTonesKeepTheirShape() {
        for (inRate, hz) in [(44_100, 1000.0), (48_000, 7000.0), (16_000, 3000.0), (22_050, 440.0), (8_000, 2500.0)] {
            let x = sine(hz, rate: inRate, count: inRate / 2)
            let y = Resampler.resample(x, from: inRate, to: 24_000)
            XCTAssertEqual(y.count, 12_000, "\(inRate) Hz: half a second in, half a second out")
            let expected = sine(hz, rate: 24_000, count: y.count)
            var maxErr: Float = 0
            for i in 300..<(y.count - 300) { maxErr = max(maxErr, abs(y[i] - expected[i])) }
            XCTAssertLessThan(maxErr, 2e-3, "\(hz) Hz tone from \(inRate) Hz")
        }
    }

    /// Content above the new Nyquist is removed, not folded back.
    func testAboveNyquistIsFiltered() {
        let x = sine(15_000, rate: 48_000, count: 24_000)
        let y = Resampler.resample(x, from: 48_000, to: 24_000)
        let rms = (y[300..<(y.count - 300)].map { Double($0 * $0) }.reduce(0, +) / Double(y.count - 600)).squareRoot()
        XCTAssertLessThan(rms, 0.8 / 2.0.squareRoot() * 0.01, "a 15 kHz tone must be attenuated by more than 40 dB")
    }

    func testSameRateAndEmptyAreUnchanged() {
        let x = sine(100, rate: 24_000, count: 100)
        XCTAssertEqual(Resampler.resample(x, from: 24_000, to: 24_000), x)
        XCTAssertEqual(Resampler.resample([], from: 44_100, to: 24_000), [])
    }
}
