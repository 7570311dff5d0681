import ArgumentParser
import DuplexAudio
import DuplexCore
import Foundation

struct Codec: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codec",
        abstract: "The Mimi codec on files: 24 kHz audio ⇄ codes ([codebooks, frames] int32 .npy, 12.5 frames/s).",
        subcommands: [Encode.self, Decode.self, Roundtrip.self, Bench.self])
}

struct MimiOptions: ParsableArguments {
    @Option(help: "Mimi checkpoint (.safetensors), e.g. tokenizer-e351c8d8-checkpoint125.safetensors.")
    var mimi: String

    func load(codebooks: Int) throws -> Mimi {
        let start = Date()
        let model = try Mimi.load(path: mimi, codebooks: codebooks)
        warn(String(format: "loaded %@ (%d codebooks) in %.2f s", mimi, codebooks, Date().timeIntervalSince(start)))
        return model
    }
}

/// Audio files the codec reads: WAV (any PCM/float encoding, any rate — resampled to 24 kHz —
/// any channel count — averaged to mono), or raw s16le mono 24 kHz (`.raw`, `.pcm`, `.s16le`, or `--raw`).
enum CodecAudio {
    struct InputError: Error, CustomStringConvertible {
        let description: String
    }

    static func read(_ path: String, raw forceRaw: Bool, sampleRate: Int) throws -> [Float] {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw InputError(description: "\(path): cannot read: \(error.localizedDescription)")
        }
        let isWAV = data.count >= 4 && data.prefix(4).elementsEqual("RIFF".utf8)
        let ext = URL(fileURLWithPath: path).pathExtension.lowercased()
        var samples: [Float]
        if isWAV && !forceRaw {
            let wav = try WAV.decode(data, path: path)
            samples = wav.mono()
            if wav.channels > 1 { warn("\(path): \(wav.channels) channels averaged to mono") }
            if wav.sampleRate != sampleRate {
                warn("\(path): resampled \(wav.sampleRate) Hz → \(sampleRate) Hz")
                samples = Resampler.resample(samples, from: wav.sampleRate, to: sampleRate)
            }
        } else if forceRaw || ["raw", "pcm", "s16le", "s16"].contains(ext) {
            if data.count % 2 != 0 { warn("\(path): odd byte count, last byte ignored") }
            samples = [Float](repeating: 0, count: data.count / 2)
            data.withUnsafeBytes { raw in
                for i in samples.indices {
                    samples[i] = PCM.float(from: Int16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)))
                }
            }
        } else {
            throw InputError(description: "\(path): not a WAV file; raw input must be s16le mono \(sampleRate) Hz, named *.raw, *.pcm or *.s16le (or pass --raw)")
        }
        let bad = samples.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
        if bad > 0 { warn("\(path): \(bad) NaN/Inf samples, replaced by 0 (NaN) or ±1 (±Inf)") }
        return samples
    }

    static func write(_ samples: [Float], to path: String, sampleRate: Int, float: Bool) throws {
        let clipped = float ? 0 : samples.reduce(0) { $0 + (abs($1) > 1 ? 1 : 0) }
        if clipped > 0 { warn("\(path): \(clipped) samples beyond ±1 clipped (use --float to keep them)") }
        try WAV(sampleRate: sampleRate, channels: 1, samples: samples).write(to: path, encoding: float ? .float32 : .pcm16)
    }
}

/// Codes files: .npy int32 [codebooks, frames].
enum CodesFile {
    static func write(_ codes: MimiCodes, to path: String) throws {
        try NPY.writeInt32(path, NPY.Array(shape: [codes.codebooks, codes.frames], int32: codes.values))
    }

    static func read(_ path: String) throws -> MimiCodes {
        let a = try NPY.readInt32(path)
        guard a.shape.count == 2 else {
            throw CodecAudio.InputError(description: "\(path): codes must be a 2-D array [codebooks, frames], got shape \(a.shape)")
        }
        return MimiCodes(codebooks: a.shape[0], frames: a.shape[1], values: a.int32)
    }
}

extension Codec {
    struct Encode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Audio → codes. A partial last frame is zero-padded to 1920 samples.")
        @OptionGroup var model: MimiOptions
        @Option(name: [.short, .long], help: "WAV (any rate, resampled) or raw s16le 24 kHz mono.") var input: String
        @Option(name: [.short, .long], help: "Codes .npy (int32 [codebooks, frames]).") var output: String
        @Option(name: [.customShort("n"), .long], help: "Codebooks to produce (1…32; Moshi uses 8).") var codebooks = 8
        @Flag(help: "Read the input as raw s16le 24 kHz mono whatever its name.") var raw = false
        @Option(help: "Also write the unquantized encoder latent here (.npy float32 [frames, dimension]).") var latent: String?
        @OptionGroup var compute: ComputeOptions

        func run() throws {
            compute.apply()
            let mimi = try model.load(codebooks: codebooks)
            let audio = try CodecAudio.read(input, raw: raw, sampleRate: mimi.config.sampleRate)
            let start = Date()
            let (codes, latentValues) = mimi.encodeWithLatent(audio)
            try CodesFile.write(codes, to: output)
            if let latent { try NPY.writeFloat32(latent, latentValues) }
            let padding = codes.frames * mimi.frameSize - audio.count
            warn(String(format: "%@: %d samples (%.2f s) → %d frames × %d codebooks in %.2f s%@", output, audio.count,
                        Double(audio.count) / Double(mimi.config.sampleRate), codes.frames, codes.codebooks,
                        Date().timeIntervalSince(start), padding > 0 ? ", last frame zero-padded by \(padding) samples" : ""))
        }
    }

    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Codes → 24 kHz mono WAV (frames × 1920 samples).")
        @OptionGroup var model: MimiOptions
        @Option(name: [.short, .long], help: "Codes .npy (int32 [codebooks, frames]).") var input: String
        @Option(name: [.short, .long], help: "Output WAV.") var output: String
        @Flag(help: "Write 32-bit float WAV instead of 16-bit PCM.") var float = false
        @OptionGroup var compute: ComputeOptions

        func run() throws {
            compute.apply()
            let codes = try CodesFile.read(input)
            let mimi = try model.load(codebooks: max(1, min(codes.codebooks, 32)))
            let start = Date()
            let audio = try mimi.decode(codes)
            try CodecAudio.write(audio, to: output, sampleRate: mimi.config.sampleRate, float: float)
            warn(String(format: "%@: %d frames × %d codebooks → %d samples in %.2f s", output, codes.frames, codes.codebooks,
                        audio.count, Date().timeIntervalSince(start)))
        }
    }

    struct Roundtrip: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Audio → codes → audio, as a stream would hear itself back.")
        @OptionGroup var model: MimiOptions
        @Option(name: [.short, .long], help: "WAV (any rate, resampled) or raw s16le 24 kHz mono.") var input: String
        @Option(name: [.short, .long], help: "Output WAV (trimmed to the input's length).") var output: String
        @Option(help: "Also write the codes here (.npy).") var codes: String?
        @Option(name: [.customShort("n"), .long], help: "Codebooks (1…32).") var codebooks = 8
        @Flag(help: "Read the input as raw s16le 24 kHz mono whatever its name.") var raw = false
        @Flag(help: "Write 32-bit float WAV instead of 16-bit PCM.") var float = false
        @OptionGroup var compute: ComputeOptions

        func run() throws {
            compute.apply()
            let mimi = try model.load(codebooks: codebooks)
            let audio = try CodecAudio.read(input, raw: raw, sampleRate: mimi.config.sampleRate)
            let start = Date()
            let encoded = mimi.encode(audio)
            if let codes { try CodesFile.write(encoded, to: codes) }
            let decoded = try mimi.decode(encoded)
            try CodecAudio.write(Array(decoded.prefix(audio.count)), to: output, sampleRate: mimi.config.sampleRate, float: float)
            warn(String(format: "%@: %d frames × %d codebooks round trip in %.2f s", output, encoded.frames, encoded.codebooks,
                        Date().timeIntervalSince(start)))
        }
    }
}
