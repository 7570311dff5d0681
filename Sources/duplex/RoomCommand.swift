import ArgumentParser
import DuplexAudio
import Foundation

/// `duplex room`: what a microphone in a simulated room hears while a loudspeaker plays one file
/// and a person speaks another, so that echo cancellation (`duplex aec`, `talk`) can be tuned
/// and tested against a known echo path without a sound card.
struct Room: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "room",
        abstract: "Simulate a loudspeaker, a room and a microphone: FAR plays, NEAR talks, MIC is what the microphone hears.",
        discussion: """
            The room delays the loudspeaker's sound (--room delay=), reverberates it (rt60=), sets \
            its level at the microphone (echo=), adds the microphone's noise floor (noise=), clock \
            drift (drift=) and a sudden echo-path change (jump=<time>:<delay change>); seed= picks \
            the random impulse response and noise. Example: \
            --room delay=80ms,rt60=400ms,echo=-6dB,noise=-60dB,drift=5ppm,jump=6s:40ms,seed=1 \
            (keys left out keep their defaults; the spec used is printed).

            Inputs are WAV (any rate, resampled to 24 kHz; channels averaged) or raw s16le 24 kHz \
            mono. MIC (and ECHO, the echo component alone, the ground truth `duplex aec --echo` \
            scores against) are 24 kHz mono 16-bit PCM WAV (32-bit float with --float), as long as \
            FAR: NEAR is cut or padded with silence to FAR's length. Samples beyond full scale are \
            clipped, with a warning.

            Then: duplex aec --far FAR.wav --mic MIC.wav --out CLEAN.wav [--echo ECHO.wav]
            """)

    @Option(help: "What the loudspeaker plays (the system's voice): WAV or raw s16le 24 kHz mono.")
    var far: String

    @Option(help: "What the person at the microphone says, as it reaches the microphone (default: nobody talks).")
    var near: String?

    @Option(help: "The room, e.g. delay=80ms,rt60=400ms,echo=-6dB,noise=-60dB,drift=5ppm,jump=6s:40ms,seed=1 (default: default).")
    var room = "default"

    @Option(help: "Where to write what the microphone hears (24 kHz mono WAV).")
    var out: String

    @Option(name: .customLong("echo-out"), help: "Also write the echo alone (24 kHz mono WAV): the ground truth for duplex aec --echo.")
    var echoOut: String?

    @Flag(help: "Write 32-bit float WAVs instead of 16-bit PCM.")
    var float = false

    func run() throws {
        let parameters: RoomParameters
        do { parameters = try RoomParameters(spec: room) } catch {
            throw CLIError("--room \(room): \(error)")
        }
        let rate = EchoAudio.sampleRate
        let farSignal = try EchoAudio.read(far)
        guard !farSignal.isEmpty else { throw CLIError("\(far): no audio") }
        var nearSignal: [Float]?
        if let near {
            let signal = try EchoAudio.read(near)
            if signal.count > farSignal.count {
                warn(String(format: "%@ (%.2f s) is longer than %@ (%.2f s): cut to its length", near, Double(signal.count) / Double(rate),
                            far, Double(farSignal.count) / Double(rate)))
            }
            nearSignal = signal
        }
        var (microphone, echo) = SimulatedRoom.microphone(far: farSignal, near: nearSignal, parameters: parameters, sampleRate: rate)
        warn("room: \(parameters.spec)")
        // The near talker as the microphone got it (cut or padded to FAR's length).
        let nearHeard = nearSignal.map { Array($0.prefix(farSignal.count)) }
        warn("levels (dBFS RMS): far \(EchoAudio.levelText(farSignal)), echo \(EchoAudio.levelText(echo)), "
             + "near \(nearHeard.map(EchoAudio.levelText) ?? "none"), mic \(EchoAudio.levelText(microphone))")
        EchoAudio.clip(&microphone, path: out, hint: "lower the room's echo= or the inputs' level")
        try EchoAudio.write(microphone, to: out, float: float)
        if let echoOut {
            EchoAudio.clip(&echo, path: echoOut, hint: "lower the room's echo=")
            try EchoAudio.write(echo, to: echoOut, float: float)
        }
        let format = float ? "32-bit float" : "16-bit PCM"
        warn(String(format: "wrote %@%@: %.2f s, %d Hz mono %@", out, echoOut.map { " and \($0)" } ?? "",
                    Double(microphone.count) / Double(rate), rate, format))
    }
}

/// The files `room` and `aec` read and write: 24 kHz mono, the rate the engine captures at.
enum EchoAudio {
    static let sampleRate = 24_000

    /// A WAV (resampled, mono) or raw s16le file, with non-finite samples made finite so that no
    /// NaN reaches the metrics (the same replacement `CodecAudio.read` announces).
    static func read(_ path: String) throws -> [Float] {
        guard FileManager.default.fileExists(atPath: path) else { throw CLIError("\(path): no such file") }
        var samples: [Float]
        do { samples = try CodecAudio.read(path, raw: false, sampleRate: sampleRate) } catch {
            throw CLIError("\(error)")
        }
        sanitize(&samples)
        return samples
    }

    /// NaN → 0, ±Inf → ±1.
    static func sanitize(_ samples: inout [Float]) {
        for i in samples.indices where !samples[i].isFinite {
            samples[i] = samples[i].isNaN ? 0 : (samples[i] > 0 ? 1 : -1)
        }
    }

    /// Clips to full scale and says how many samples it changed: an out-of-range sample in a
    /// float WAV is a file other tools read differently, and 16-bit PCM cannot hold it anyway.
    static func clip(_ samples: inout [Float], path: String, hint: String) {
        var clipped = 0
        for i in samples.indices where abs(samples[i]) > 1 {
            samples[i] = samples[i] > 0 ? 1 : -1
            clipped += 1
        }
        if clipped > 0 {
            warn(String(format: "warning: %@: %d samples (%.3f %%) beyond full scale, clipped (%@)", path, clipped,
                        100 * Double(clipped) / Double(max(1, samples.count)), hint))
        }
    }

    static func write(_ samples: [Float], to path: String, float: Bool, channels: Int = 1) throws {
        do {
            try WAV(sampleRate: sampleRate, channels: channels, samples: samples).write(to: path, encoding: float ? .float32 : .pcm16)
        } catch {
            throw CLIError("\(error)")
        }
    }

    /// RMS level in dBFS (full-scale square wave = 0), nil for silence.
    static func level(_ samples: ArraySlice<Float>) -> Double? {
        guard !samples.isEmpty else { return nil }
        var energy = 0.0
        for x in samples { energy += Double(x) * Double(x) }
        guard energy > 0 else { return nil }
        return 10 * log10(energy / Double(samples.count))
    }

    static func levelText(_ samples: [Float]) -> String {
        level(samples[...]).map { String(format: "%.1f", $0) } ?? "silent"
    }
}
