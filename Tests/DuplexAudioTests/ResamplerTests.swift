import DuplexAudio
import Foundation
import XCTest

final class ResamplerTests: XCTestCase {
    private func tone(_ frequency: Double, rate: Int, count: Int, phase: Double = 0) -> [Float] {
        (0..<count).map { Float(0.5 * sin(2 * Double.pi * frequency * Double($0) / Double(rate) + phase)) }
    }

    /// A tone resampled must be the same tone at the new rate, time-aligned (no leading delay).
    func testToneSurvivesCommonRateChangesTimeAligned() {
        for (from, to) in [(48_000, 24_000), (24_000, 48_000), (44_100, 24_000), (24_000, 44_100), (16_000, 24_000)] {
            let seconds = 0.5
            let input = tone(440, rate: from, count: Int(seconds * Double(from)))
            let output = Resampler.resample(input, from: from, to: to)
            XCTAssertEqual(output.count, Int((seconds * Double(to)).rounded()), "\(from)→\(to) length")
            let expected = tone(440, rate: to, count: output.count)
            // Ignore the edges where the filter sees the signal start/stop.
            let margin = to / 50
            var maxError: Float = 0
            for i in margin..<(output.count - margin) { maxError = max(maxError, abs(output[i] - expected[i])) }
            XCTAssertLessThan(maxError, 2e-3, "\(from)→\(to): max error \(maxError)")
        }
    }

    /// Content above the new Nyquist frequency is removed, not folded back.
    func testDownsamplingRejectsAliases() {
        let input = tone(15_000, rate: 48_000, count: 48_000)
        let output = Resampler.resample(input, from: 48_000, to: 24_000)
        let rms = (output[1000..<(output.count - 1000)].reduce(0.0) { $0 + Double($1 * $1) } / Double(output.count - 2000)).squareRoot()
        XCTAssertLessThan(rms, 0.35 * 0.01, "a 15 kHz tone must be attenuated by > 40 dB at 24 kHz (rms \(rms))")
    }

    /// Streaming in pieces of any size gives exactly the one-shot result.
    func testStreamingInPiecesEqualsOneShot() {
        let input = tone(300, rate: 44_100, count: 20_000) .enumerated().map { $0.element + Float($0.offset % 7) * 0.01 }
        func run(pieces: [Int]) -> [Float] {
            let r = Resampler(from: 44_100, to: 24_000)
            var out = [Float](repeating: 0, count: r.maxOutput(forInput: input.count) + 64)
            var produced = 0, consumed = 0, i = 0
            while consumed < input.count {
                let n = min(pieces[i % pieces.count], input.count - consumed)
                produced += input.withUnsafeBufferPointer { src in
                    out.withUnsafeMutableBufferPointer { dst in
                        r.process(src.baseAddress! + consumed, count: n, into: dst.baseAddress! + produced, capacity: dst.count - produced)
                    }
                }
                consumed += n
                i += 1
            }
            return Array(out[0..<produced])
        }
        let whole = run(pieces: [input.count])
        for pieces in [[1], [7, 1, 300], [1920], [4096, 3]] {
            XCTAssertEqual(run(pieces: pieces), whole, "pieces \(pieces)")
        }
    }
}
