import DuplexAudio
import Foundation
import XCTest

/// The speech fixtures for echo-cancellation tests (`Tests/Fixtures/aec/`), resampled to 24 kHz.
/// A missing file is a failure that says how to make it, never a skip: a test that silently does
/// not run proves nothing.
public enum SpeechFixtures {
    public static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/aec")
    public static let regenerateCommand = "tools/aec/make_speech.sh"

    /// `name` is "far" (the system's voice) or "near" (the person at the microphone).
    public static func load(_ name: String, sampleRate: Int = 24_000,
                            file: StaticString = #filePath, line: UInt = #line) -> [Float]? {
        let path = directory.appendingPathComponent("\(name).wav").path
        guard FileManager.default.fileExists(atPath: path) else {
            XCTFail("missing speech fixture \(path): run \(regenerateCommand) from the package root", file: file, line: line)
            return nil
        }
        do {
            let wav = try WAV.read(path)
            return Resampler.resample(wav.mono(), from: wav.sampleRate, to: sampleRate)
        } catch {
            XCTFail("\(error) (regenerate with \(regenerateCommand))", file: file, line: line)
            return nil
        }
    }
}

final class SimulatedRoomTests: XCTestCase {
    private let rate = 24_000

    // MARK: - Signals

    /// Uniform white noise in [−amplitude, amplitude), reproducible (SplitMix64).
    private func whiteNoise(_ count: Int, seed: UInt64, amplitude: Float = 0.5) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            return (Float(z >> 40) / Float(1 << 24) * 2 - 1) * amplitude
        }
    }

    private func meanSquare(_ x: [Float], _ range: Range<Int>) -> Double {
        x[range].reduce(0.0) { $0 + Double($1) * Double($1) } / Double(range.count)
    }

    private func room(_ spec: String, file: StaticString = #filePath, line: UInt = #line) -> RoomParameters {
        do { return try RoomParameters(spec: spec) } catch {
            XCTFail("\(spec): \(error)", file: file, line: line)
            return RoomParameters()
        }
    }

    // MARK: - Impulse response

    /// Schroeder backward integration: the energy decay curve, fitted by least squares between −5
    /// and −35 dB and extrapolated to −60 dB (ISO 3382's T30).
    private func schroederRT60(_ h: [Float], sampleRate: Int) -> Double {
        var remaining = h.reduce(0.0) { $0 + Double($1) * Double($1) }
        let total = remaining
        var xs: [Double] = [], ys: [Double] = []
        for (n, v) in h.enumerated() {
            let level = 10 * log10(remaining / total)
            if level <= -5 && level >= -35 { xs.append(Double(n) / Double(sampleRate)); ys.append(level) }
            remaining -= Double(v) * Double(v)
        }
        let mx = xs.reduce(0, +) / Double(xs.count), my = ys.reduce(0, +) / Double(ys.count)
        var sxy = 0.0, sxx = 0.0
        for (x, y) in zip(xs, ys) { sxy += (x - mx) * (y - my); sxx += (x - mx) * (x - mx) }
        return -60 / (sxy / sxx)
    }

    func testImpulseResponseDecaysAtTheAskedRT60WithUnitEnergy() {
        for rt60 in [0.2, 0.4, 0.6] {
            let h = RoomImpulseResponse.make(rt60Seconds: rt60, sampleRate: rate, seed: 7)
            let measured = schroederRT60(h, sampleRate: rate)
            XCTAssertEqual(measured, rt60, accuracy: 0.1 * rt60, "RT60 \(rt60) s measured \(measured) s")
            let energy = h.reduce(0.0) { $0 + Double($1) * Double($1) }
            XCTAssertEqual(energy, 1, accuracy: 1e-5, "RT60 \(rt60): energy")
            XCTAssertEqual(h.count, Int((rt60 * Double(rate)).rounded(.up)), "RT60 \(rt60): length until −60 dB")
            let strongest = h.map(abs).max()!
            XCTAssertEqual(h.firstIndex { abs($0) == strongest }, 0, "the direct path is the strongest tap")
        }
    }

    func testImpulseResponseIsDeterministicPerSeed() {
        let a = RoomImpulseResponse.make(rt60Seconds: 0.3, sampleRate: rate, seed: 11)
        let b = RoomImpulseResponse.make(rt60Seconds: 0.3, sampleRate: rate, seed: 11)
        let c = RoomImpulseResponse.make(rt60Seconds: 0.3, sampleRate: rate, seed: 12)
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.count, c.count)
        let difference = zip(a, c).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(difference, 0.01, "another seed must give another tail")
    }

    func testLongRoomsAreCutAtTheCap() {
        let h = RoomImpulseResponse.make(rt60Seconds: 2, sampleRate: rate, seed: 1)
        XCTAssertEqual(h.count, Int(RoomImpulseResponse.maximumSeconds * Double(rate)))
    }

    // MARK: - Delay, drift, jump

    /// The bulk delay as the far → echo cross-correlation peak over 2000 reference samples.
    private func lag(far: [Float], echo: [Float], at start: Int, maxLag: Int) -> Int {
        EchoMetrics.correlation(reference: far, processed: echo, range: start..<(start + 2000), maxLag: maxLag).lag
    }

    func testEchoArrivesAfterTheBulkDelay() {
        let far = whiteNoise(rate / 2, seed: 1)
        for milliseconds in [20, 60, 120] {
            let parameters = room("delay=\(milliseconds)ms,rt60=50ms,noise=off")
            let (_, echo) = SimulatedRoom.microphone(far: far, near: nil, parameters: parameters)
            let found = lag(far: far, echo: echo, at: 0, maxLag: 3000)
            XCTAssertEqual(Double(found), Double(milliseconds * rate / 1000), accuracy: 1, "delay \(milliseconds) ms")
        }
    }

    func testDriftStretchesTheLagOverThirtySeconds() {
        // Noise only at the start and at the end: the silent middle costs no convolution.
        let total = 30 * rate, burst = rate / 4
        var far = [Float](repeating: 0, count: total)
        let noise = whiteNoise(2 * burst, seed: 2)
        far.replaceSubrange(0..<burst, with: noise[0..<burst])
        far.replaceSubrange((total - burst)..<total, with: noise[burst...])
        let (_, echo) = SimulatedRoom.microphone(far: far, near: nil, parameters: room("delay=60ms,rt60=50ms,noise=off,drift=100ppm"))
        let startLag = lag(far: far, echo: echo, at: 0, maxLag: 1600)
        let endLag = lag(far: far, echo: echo, at: total - burst, maxLag: 1600)
        XCTAssertEqual(startLag, 1440, "drift starts from the bulk delay")
        // 100 ppm of 30 s at 24 kHz is 72 samples (71.4 between the centres of the two measuring windows).
        XCTAssertEqual(Double(endLag - startLag), 72, accuracy: 2, "lag \(startLag) → \(endLag)")
    }

    func testDelayJumpMovesTheLagAtItsTime() {
        let far = whiteNoise(rate, seed: 3)
        let (_, echo) = SimulatedRoom.microphone(far: far, near: nil, parameters: room("delay=60ms,rt60=50ms,noise=off,jump=0.5s:40ms"))
        XCTAssertEqual(lag(far: far, echo: echo, at: 0, maxLag: 2600), 1440, "before the jump")
        // Far samples from 0.6 s reach the microphone after 0.5 s, at the new 100 ms delay.
        XCTAssertEqual(lag(far: far, echo: echo, at: rate * 6 / 10, maxLag: 2600), 2400, "after the jump")
    }

    // MARK: - Levels

    func testEchoEnergyFollowsTheEchoGain() {
        let far = whiteNoise(2 * rate, seed: 4)
        for gain in [-10.0, 0, 6] {
            let (microphone, echo) = SimulatedRoom.microphone(far: far, near: nil, parameters: room("echo=\(gain)dB,delay=10ms,rt60=50ms,noise=off"))
            XCTAssertEqual(microphone, echo, "without noise or near talker the microphone hears only the echo")
            // Skip the first delay + response length, where the room is still filling.
            let settled = 240 + 1300
            let measured = 10 * log10(meanSquare(echo, settled..<far.count) / meanSquare(far, 0..<far.count))
            XCTAssertEqual(measured, gain, accuracy: 0.5, "echo gain \(gain) dB")
        }
    }

    func testNoiseFloorHasTheAskedLevel() {
        let silence = [Float](repeating: 0, count: rate)
        let (microphone, echo) = SimulatedRoom.microphone(far: silence, near: nil, parameters: room("noise=-55dB"))
        let level = 10 * log10(meanSquare(microphone, 0..<rate))
        XCTAssertEqual(level, -55, accuracy: 1, "noise RMS in dBFS")
        XCTAssertEqual(echo.map(abs).max(), 0, "silence played, no echo")
        let quiet = SimulatedRoom.microphone(far: silence, near: nil, parameters: room("noise=off")).microphone
        XCTAssertEqual(quiet.map(abs).max(), 0, "noise=off is a silent microphone")
    }

    func testMicrophoneIsNearPlusEcho() {
        let far = whiteNoise(4800, seed: 5), near = whiteNoise(3000, seed: 6, amplitude: 0.3)
        let (microphone, echo) = SimulatedRoom.microphone(far: far, near: near, parameters: room("rt60=50ms,noise=off"))
        XCTAssertEqual(microphone.count, far.count)
        var worst: Float = 0
        for i in 0..<far.count { worst = max(worst, abs(microphone[i] - echo[i] - (i < near.count ? near[i] : 0))) }
        XCTAssertLessThan(worst, 1e-6, "microphone − echo must be the near talker (padded with silence)")
    }

    // MARK: - Streaming

    func testChunkedProcessingEqualsWholeProcessing() {
        let parameters = room("delay=20ms,rt60=50ms,echo=-3dB,noise=-50dB,drift=300ppm,jump=0.1s:-7.3ms,seed=9")
        let far = whiteNoise(7200, seed: 7), near = whiteNoise(7200, seed: 8, amplitude: 0.2)
        let whole = SimulatedRoom.microphone(far: far, near: near, parameters: parameters)
        for chunk in [1, 7, 120, 1920] {
            let room = SimulatedRoom(parameters)
            var microphone = [Float](repeating: .nan, count: far.count), echo = microphone
            var start = 0
            while start < far.count {
                let n = min(chunk, far.count - start)
                far.withUnsafeBufferPointer { f in near.withUnsafeBufferPointer { s in
                    microphone.withUnsafeMutableBufferPointer { m in echo.withUnsafeMutableBufferPointer { e in
                        room.process(far: f.baseAddress! + start, near: s.baseAddress! + start, count: n,
                                     microphone: m.baseAddress! + start, echo: e.baseAddress! + start)
                    } }
                } }
                start += n
            }
            let micError = zip(microphone, whole.microphone).map { abs($0 - $1) }.max()!
            let echoError = zip(echo, whole.echo).map { abs($0 - $1) }.max()!
            XCTAssertLessThanOrEqual(micError, 1e-6, "chunk \(chunk): microphone")
            XCTAssertLessThanOrEqual(echoError, 1e-6, "chunk \(chunk): echo")
        }
    }

    func testClippedInputStaysFinite() {
        let far = (0..<4800).map { Float($0 / 100 % 2 == 0 ? 1 : -1) }
        let near = [Float](repeating: 1, count: 4800)
        let (microphone, echo) = SimulatedRoom.microphone(far: far, near: near, parameters: room("echo=20dB,rt60=50ms,drift=-1000ppm,delay=0ms"))
        XCTAssertTrue(microphone.allSatisfy(\.isFinite) && echo.allSatisfy(\.isFinite))
    }

    // MARK: - Spec

    func testSpecParsesAndRoundTrips() throws {
        let p = try RoomParameters(spec: "delay=80ms,rt60=400ms,echo=-10dB,noise=-55dB,drift=5ppm,jump=6s:40ms,seed=3")
        XCTAssertEqual(p, RoomParameters(delayMilliseconds: 80, rt60Seconds: 0.4, echoGainDecibels: -10, noiseDecibels: -55,
                                         driftPPM: 5, delayJump: .init(atSeconds: 6, milliseconds: 40), seed: 3))
        XCTAssertEqual(try RoomParameters(spec: p.spec), p, p.spec)
        XCTAssertEqual(try RoomParameters(spec: ""), RoomParameters())
        XCTAssertEqual(try RoomParameters(spec: "default"), RoomParameters())
        XCTAssertEqual(try RoomParameters(spec: RoomParameters().spec), RoomParameters())
        // Units are optional: bare numbers are in the field's own unit.
        XCTAssertEqual(try RoomParameters(spec: "delay=80,rt60=0.4,jump=6000ms:0.04s"),
                       try RoomParameters(spec: "delay=0.08s,rt60=400ms,jump=6:40"))
        let odd = try RoomParameters(spec: "delay=33.3ms,rt60=0.123s,echo=-7.77dB,noise=off,drift=-0.1ppm,jump=1.5s:-12.5ms,seed=18446744073709551615")
        XCTAssertNil(odd.noiseDecibels)
        XCTAssertEqual(odd.seed, .max)
        XCTAssertEqual(try RoomParameters(spec: odd.spec), odd, odd.spec)
    }

    func testBadSpecsNameTheKeyTheValueAndWhatIsAllowed() {
        func message(_ spec: String) -> String {
            do { _ = try RoomParameters(spec: spec); return "(parsed)" } catch { return "\(error)" }
        }
        let cases: [(spec: String, mentions: [String])] = [
            ("reverb=1s", ["reverb", "1s", "delay", "rt60"]),           // unknown key: lists the keys
            ("delay=80dB", ["delay", "80dB", "ms"]),                     // bad unit
            ("rt60=5s", ["rt60", "5s", "0.05…2"]),                       // out of range
            ("drift=2000ppm", ["drift", "2000ppm", "-1000…1000"]),
            ("echo=loud", ["echo", "loud", "dB"]),
            ("jump=6s", ["jump", "6s", "jump=6s:40ms"]),
            ("delay=450ms,jump=1s:100ms", ["jump", "100ms", "0…500"]),   // the delay after the jump
            ("seed=-1", ["seed", "-1", "integer"]),
            ("delay=nan", ["delay", "nan"]),
            ("delay", ["delay", "key=value"]),
            ("delay=1ms,delay=2ms", ["delay", "once"]),
        ]
        for (spec, mentions) in cases {
            let text = message(spec)
            for word in mentions { XCTAssertTrue(text.contains(word), "\(spec): \"\(text)\" should mention \(word)") }
        }
    }

    // MARK: - Metrics

    func testERLEOfAScaledOutput() {
        // Integers times 2^-20 keep mic = 100·output exact in Float, so the ratio is exactly 10^4.
        let steps = whiteNoise(4800, seed: 10).map { ($0 * 2000).rounded() }
        let output = steps.map { $0 * 0x1p-20 }
        let microphone = steps.map { $0 * 100 * 0x1p-20 }
        XCTAssertEqual(EchoMetrics.erle(microphone: microphone, output: output, range: 0..<4800), 40, accuracy: 1e-9)
        XCTAssertEqual(EchoMetrics.erle(microphone: microphone, output: [Float](repeating: 0, count: 4800), range: 0..<4800),
                       EchoMetrics.decibelCap, "a silent output is the cap, not infinity")
        XCTAssertEqual(EchoMetrics.erle(microphone: [Float](repeating: 0, count: 10), output: [Float](repeating: 0, count: 10), range: 0..<10), 0)

        // Window i attenuated by i dB; the trailing partial window is dropped.
        let window = 480
        let mic = whiteNoise(5 * window + 100, seed: 11)
        let out = mic.enumerated().map { $0.element * Float(pow(10, -Double($0.offset / window) / 20)) }
        let curve = EchoMetrics.erleCurve(microphone: mic, output: out, window: window)
        XCTAssertEqual(curve.count, 5)
        for (i, value) in curve.enumerated() { XCTAssertEqual(value, Double(i), accuracy: 1e-4, "window \(i)") }
    }

    func testConvergenceAndRecoveryOnAKnownCurve() {
        let window = 2400  // 0.1 s
        let curve: [Double] = [0, 5, 12, 22, 18, 25, 30, 31, 29, 30]
        XCTAssertEqual(EchoMetrics.convergenceTime(curve: curve, window: window, threshold: 20)!, 0.5, accuracy: 1e-12)
        // Window 4 dips while the far end is silent: it must not count.
        var active = [Bool](repeating: true, count: curve.count)
        active[4] = false
        XCTAssertEqual(EchoMetrics.convergenceTime(curve: curve, window: window, threshold: 20, active: active)!, 0.3, accuracy: 1e-12)
        XCTAssertNil(EchoMetrics.convergenceTime(curve: curve + [10], window: window, threshold: 20), "ends below: never converged")
        XCTAssertNil(EchoMetrics.convergenceTime(curve: curve, window: window, threshold: 40))

        let changed: [Double] = [25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 5, 8, 15, 22, 25, 26]
        XCTAssertEqual(EchoMetrics.recoveryTime(curve: changed, window: window, after: 1.0, threshold: 20)!, 0.3, accuracy: 1e-12)
        XCTAssertEqual(EchoMetrics.recoveryTime(curve: changed, window: window, after: 1.05, threshold: 20)!, 0.25, accuracy: 1e-12)
        XCTAssertNil(EchoMetrics.recoveryTime(curve: changed, window: window, after: 1.0, threshold: 30))

        let loudQuietLoud = whiteNoise(window, seed: 12, amplitude: 0.1) + [Float](repeating: 0.0001, count: window)
            + whiteNoise(window, seed: 13, amplitude: 0.1)
        XCTAssertEqual(EchoMetrics.activeWindows(signal: loudQuietLoud, window: window, thresholdDecibels: -50), [true, false, true])
    }

    func testSegmentalSNRCorrelationAndLevel() {
        let speech = whiteNoise(4800, seed: 14, amplitude: 0.1) + [Float](repeating: 0, count: 4800)
        // Garbage where the reference is silent must not count: only active frames are averaged.
        let identical = Array(speech[0..<4800]) + whiteNoise(4800, seed: 15, amplitude: 0.05)
        XCTAssertEqual(EchoMetrics.segmentalSNR(reference: speech, processed: identical, range: 0..<9600), 35, accuracy: 1e-12)
        let noisy = zip(speech, whiteNoise(9600, seed: 16, amplitude: 0.01)).map { $0 + $1 }
        XCTAssertEqual(EchoMetrics.segmentalSNR(reference: speech, processed: noisy, range: 0..<9600), 20, accuracy: 0.5)

        let reference = whiteNoise(3000, seed: 17)
        let same = EchoMetrics.correlation(reference: reference, processed: reference, range: 100..<2900, maxLag: 50)
        XCTAssertEqual(same.coefficient, 1, accuracy: 1e-12)
        XCTAssertEqual(same.lag, 0)
        let late = [Float](repeating: 0, count: 37) + reference
        XCTAssertEqual(EchoMetrics.correlation(reference: reference, processed: late, range: 100..<2900, maxLag: 50).lag, 37)
        let early = Array(reference[20...])
        XCTAssertEqual(EchoMetrics.correlation(reference: reference, processed: early, range: 100..<2900, maxLag: 50).lag, -20)

        let half = reference.map { $0 * 0.5 }
        XCTAssertEqual(EchoMetrics.levelDifference(reference: reference, processed: half, range: 0..<3000), 20 * log10(2.0), accuracy: 1e-9)
    }

    // MARK: - Fixtures

    func testSpeechFixturesLoadAt24kHz() throws {
        for name in ["far", "near"] {
            let path = SpeechFixtures.directory.appendingPathComponent("\(name).wav").path
            guard let speech = SpeechFixtures.load(name) else { continue }  // load() has failed the test
            let wav = try WAV.read(path)
            XCTAssertEqual(wav.channels, 1, name)
            let seconds = Double(wav.frameCount) / Double(wav.sampleRate)
            XCTAssertEqual(seconds, 12.5, accuracy: 2.5, "\(name): about 12 s of speech")
            XCTAssertEqual(speech.count, Int((Double(wav.frameCount) * 24_000 / Double(wav.sampleRate)).rounded()), "\(name): resampled length")
            let level = 10 * log10(meanSquare(speech, 0..<speech.count))
            XCTAssertGreaterThan(level, -40, "\(name): speech, not silence")
            XCTAssertLessThanOrEqual(speech.map(abs).max()!, 1.05, "\(name): within full scale")
        }
    }
}
