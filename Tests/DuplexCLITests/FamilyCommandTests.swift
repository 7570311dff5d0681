import DuplexCore
import Foundation
import XCTest

/// The family members through the binary a user runs: `generate --input-codes/--output-codes`
/// token for token against Kyutai's frames (the fixtures of FamilyReferenceTests laid out as a
/// model folder), `transcribe` end to end, and the refusals that name what to do instead.
final class FamilyCommandTests: XCTestCase {
    private let fixtures = packageRoot.appendingPathComponent("Tests/DuplexCoreTests/Fixtures")

    /// A model folder from a fixture: its weights (without the `fixture.*` records) as
    /// model.safetensors and its config as config.json.
    private func folder(fromFixture name: String, extraConfig: [String: Any] = [:]) throws -> (URL, SafetensorsFile) {
        let file = try SafetensorsFile(path: fixtures.appendingPathComponent(name + ".safetensors").path)
        let dir = try cliScratch().appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var writer = SafetensorsWriter()
        for (tensorName, entry) in file.entries where !tensorName.hasPrefix("fixture.") {
            writer.add(tensorName, raw: Data(file.bytes(entry)), dtype: entry.dtype, shape: entry.shape)
        }
        try writer.write(to: dir.appendingPathComponent("model.safetensors").path)
        var config = try JSONSerialization.jsonObject(with: Data(file.metadata["config"]!.utf8)) as! [String: Any]
        config.merge(extraConfig) { $1 }
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
        return (dir, file)
    }

    /// Writes the fixture's user codes as generate's --input-codes.
    private func userCodes(_ file: SafetensorsFile, in dir: URL) throws -> String {
        let (shape, values) = try file.intTensor("fixture.user_codes")
        let path = dir.appendingPathComponent("user.npy").path
        try NPY.writeInt32(path, NPY.Array(shape: shape, int32: values.map { Int32($0) }))
        return path
    }

    /// Frames as generate writes them ([rows, frames] → per frame).
    private func frames(_ path: String) throws -> [[Int32]] {
        let a = try NPY.readInt32(path)
        let (rows, n) = (a.shape[0], a.shape[1])
        return (0..<n).map { t in (0..<rows).map { a.int32[$0 * n + t] } }
    }

    private func expected(_ file: SafetensorsFile, _ name: String) throws -> [[Int32]] {
        let (shape, values) = try file.intTensor(name)
        return (0..<shape[0]).map { t in (0..<shape[1]).map { Int32(values[t * shape[1] + $0]) } }
    }

    private let greedy = ["--temperature", "0", "--text-temperature", "0", "--kv-cache", "f32"]

    func testGenerateCodesOfAnSTTModelAreKyutaisTextTokens() throws {
        let (dir, file) = try folder(fromFixture: "stt_tiny")
        let out = dir.appendingPathComponent("out.npy").path
        let run = try runDuplex(["generate", "--model", dir.path, "--input-codes", try userCodes(file, in: dir), "--output-codes", out] + greedy)
        XCTAssertEqual(run.status, 0, run.stderr)
        let got = try frames(out)
        XCTAssertEqual(got.first?.count, 1, "an STT model's frames are its text token alone")
        XCTAssertEqual(got, try expected(file, "fixture.returned"))
    }

    func testGenerateCodesOfHibikiMatchKyutaiWithAndWithoutGuidance() throws {
        let (dir, file) = try folder(fromFixture: "hibiki_tiny")
        let input = try userCodes(file, in: dir)
        for (cfg, record) in [("1", "fixture.returned"), ("3", "fixture.cfg_returned")] {
            let out = dir.appendingPathComponent("out-\(cfg).npy").path
            let run = try runDuplex(["generate", "--model", dir.path, "--input-codes", input, "--output-codes", out, "--cfg", cfg] + greedy)
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertEqual(try frames(out), try expected(file, record), "--cfg \(cfg)")
        }
    }

    func testAnSTTModelRefusesToSpeakAndPointsToTranscribe() throws {
        let (dir, _) = try folder(fromFixture: "stt_tiny")
        let wav = dir.appendingPathComponent("in.wav").path
        try WAVFile.silence(seconds: 0.4).write(to: URL(fileURLWithPath: wav))
        let run = try runDuplex(["generate", "--model", dir.path, "--input", wav, "--output", dir.appendingPathComponent("o.wav").path])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("duplex transcribe"), run.stderr)
    }

    func testGuidanceOnAModelWithoutConditioningIsRefused() throws {
        let (dir, file) = try folder(fromFixture: "stt_tiny")
        let run = try runDuplex(["generate", "--model", dir.path, "--input-codes", try userCodes(file, in: dir),
                                 "--output-codes", dir.appendingPathComponent("o.npy").path, "--cfg", "2"])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("--cfg") && run.stderr.contains("Hibiki"), run.stderr)
    }

    func testTranscribeRefusesAConversationModel() throws {
        let wav = try cliScratch().appendingPathComponent("silence.wav")
        try WAVFile.silence(seconds: 0.4).write(to: wav)
        let run = try runDuplex(["transcribe", "--model", packageRoot.appendingPathComponent("models/default").path, wav.path])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("stt"), run.stderr)
    }

    /// A random-weights STT folder shaped like Kyutai's (32 codebooks, a VAD head), with the tiny
    /// tokenizer: `transcribe` runs the whole path (Mimi, the padding, the LM, words, turn ends).
    private func randomSTTFolder(tokenizer: Bool = true) throws -> URL {
        let dir = try cliScratch().appendingPathComponent("stt-random-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config: [String: Any] = [
            "model_type": "stt", "dim": 64, "text_card": 500, "n_q": 32, "dep_q": 0, "card": 2048, "num_heads": 4, "num_layers": 2,
            "context": 16, "delays": [Int](repeating: 0, count: 33), "extra_heads_num_heads": 4, "extra_heads_dim": 6,
            "stt_config": ["audio_delay_seconds": 0.24, "audio_silence_prefix_seconds": 0.16],
            "tokenizer_name": "hf://kyutai/stt-1b-en_fr/tokenizer.model",
            "duplex": ["random_weights_seed": 7, "mimi": ["filters": 8, "dimension": 64, "transformer_layers": 1, "transformer_heads": 2,
                                                         "transformer_feedforward": 128, "codebook_dimension": 32]],
        ]
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
        if tokenizer {
            try FileManager.default.copyItem(at: fixtures.appendingPathComponent("tokenizer_tiny.model"),
                                             to: dir.appendingPathComponent("tokenizer.model"))
        }
        return dir
    }

    func testTranscribeRunsAFileAndPrintsWordsWithTimesAsJSON() throws {
        let dir = try randomSTTFolder()
        let wav = dir.appendingPathComponent("speech.wav")
        try WAVFile.chirp(seconds: 1.2).write(to: wav)
        let run = try runDuplex(["transcribe", "--model", dir.path, wav.path, "--json", "--vad-threshold", "0.2", "-t", "1"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let lines = run.stdout.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        XCTAssertFalse(lines.contains { $0 == nil }, "every line is a JSON object: \(run.stdout)")
        let objects = lines.compactMap { $0 }
        let summary = try XCTUnwrap(objects.last, "a summary line")
        XCTAssertEqual(summary["type"] as? String, "summary")
        // 1.2 s of audio + 0.16 s prefix + (0.24 + 1) s tail = 2.6 s = 32.5 frames: whole frames only, as run_inference keeps.
        XCTAssertEqual(summary["frames"] as? Int, 32, run.stderr)
        XCTAssertNotNil(summary["real_time_factor"] as? Double)
        let words = objects.filter { $0["type"] as? String == "word" }
        XCTAssertEqual(summary["words"] as? Int, words.count)
        var last = -1.0
        for w in words {
            let start = try XCTUnwrap(w["start"] as? Double), end = try XCTUnwrap(w["end"] as? Double)
            XCTAssertLessThanOrEqual(start, end, "\(w)")
            XCTAssertGreaterThanOrEqual(start, last, "words come in order")
            XCTAssertFalse((w["text"] as? String ?? "").isEmpty)
            last = start
        }
        XCTAssertTrue(run.stderr.contains("real-time factor"), run.stderr)
    }

    func testTranscribeReadsRawPCMFromStdinLikeTheFile() throws {
        let dir = try randomSTTFolder()
        let wav = dir.appendingPathComponent("speech.wav")
        let audio = WAVFile.chirp(seconds: 0.8)
        try audio.write(to: wav)
        let fromFile = try runDuplex(["transcribe", "--model", dir.path, wav.path, "--json", "-t", "1"])
        let raw = dir.appendingPathComponent("speech.raw")
        try audio.pcm16.write(to: raw)
        let fromPipe = try runDuplex(["transcribe", "--model", dir.path, "-", "--json", "-t", "1"], stdin: raw)
        XCTAssertEqual(fromFile.status, 0, fromFile.stderr)
        XCTAssertEqual(fromPipe.status, 0, fromPipe.stderr)
        func words(_ s: String) -> [Substring] { s.split(separator: "\n").filter { $0.contains("\"word\"") } }
        XCTAssertEqual(words(fromPipe.stdout), words(fromFile.stdout), "the same samples give the same words")
    }

    func testTranscribeWithoutTheTokenizerNamesTheFile() throws {
        let dir = try randomSTTFolder(tokenizer: false)
        let wav = dir.appendingPathComponent("speech.wav")
        try WAVFile.chirp(seconds: 0.4).write(to: wav)
        let run = try runDuplex(["transcribe", "--model", dir.path, wav.path])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("tokenizer.model") && run.stderr.contains("kyutai/stt-1b-en_fr"), run.stderr)
    }
}

/// 24 kHz mono 16-bit WAV bytes for tests.
struct WAVFile {
    let samples: [Float]

    static func silence(seconds: Double) -> WAVFile { WAVFile(samples: [Float](repeating: 0, count: Int(seconds * 24_000))) }

    /// A rising tone with an envelope: something for the codec to encode.
    static func chirp(seconds: Double) -> WAVFile {
        let n = Int(seconds * 24_000)
        return WAVFile(samples: (0..<n).map { i in
            let t = Double(i) / 24_000
            return Float(0.3 * sin(2 * .pi * (200 + 400 * t) * t) * sin(.pi * t / seconds))
        })
    }

    var pcm16: Data {
        var d = Data(capacity: samples.count * 2)
        for s in samples {
            let v = Int16(max(-1, min(1, s)) * 32767)
            withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) }
        }
        return d
    }

    func write(to url: URL) throws {
        let body = pcm16
        var d = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        d.append(contentsOf: Array("RIFF".utf8)); u32(UInt32(36 + body.count)); d.append(contentsOf: Array("WAVE".utf8))
        d.append(contentsOf: Array("fmt ".utf8)); u32(16); u16(1); u16(1); u32(24_000); u32(48_000); u16(2); u16(16)
        d.append(contentsOf: Array("data".utf8)); u32(UInt32(body.count))
        d.append(body)
        try d.write(to: url)
    }
}

/// PersonaPlex's options through the binary (a random-weights PersonaPlex-shaped folder: the
/// parity itself is PersonaPlexTests' and PersonaSessionTests').
final class PersonaCommandTests: XCTestCase {
    private let fixtures = packageRoot.appendingPathComponent("Tests/DuplexCoreTests/Fixtures")

    private func personaFolder() throws -> URL {
        let dir = try cliScratch().appendingPathComponent("personaplex-random-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config: [String: Any] = [
            "model_type": "personaplex", "dim": 64, "text_card": 500, "n_q": 16, "dep_q": 16, "card": 32, "num_heads": 4, "num_layers": 2,
            "context": 100, "depformer_dim": 32, "depformer_num_heads": 2, "depformer_num_layers": 1, "depformer_dim_feedforward": 64,
            "tokenizer_name": "tokenizer.model", "duplex": ["random_weights_seed": 3],
        ]
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("tokenizer_tiny.model"), to: dir.appendingPathComponent("tokenizer.model"))
        let codes = (0..<(8 * 12)).map { Int32($0 % 32) }
        try NPY.writeInt32(dir.appendingPathComponent("user.npy").path, NPY.Array(shape: [8, 12], int32: codes))
        return dir
    }

    private func generate(_ dir: URL, _ extra: [String]) throws -> (CLIRun, NPY.Array?) {
        let out = dir.appendingPathComponent("out-\(UUID().uuidString).npy").path
        let run = try runDuplex(["generate", "--model", dir.path, "--input-codes", dir.appendingPathComponent("user.npy").path,
                                 "--output-codes", out, "--temperature", "0", "--text-temperature", "0"] + extra)
        return (run, try? NPY.readInt32(out))
    }

    func testVoiceAndRolePromptsShapeTheAnswer() throws {
        let dir = try personaFolder()
        let voice = fixtures.appendingPathComponent("personaplex_tiny_voice.pt").path
        let (plain, silenceOnly) = try generate(dir, [])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertTrue(plain.stderr.contains("persona prompt: 12 frames"), "NVIDIA's silences run even without a persona: \(plain.stderr)")
        let (run, persona) = try generate(dir, ["--voice-prompt", voice, "--text-prompt", "You are a wise teacher."])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(persona?.shape, [9, 12], "text + Moshi's 8 codebooks per input frame")
        XCTAssertNotEqual(persona?.int32, silenceOnly?.int32, "the persona changes the answer")
        let (again, repeated) = try generate(dir, ["--voice-prompt", voice, "--text-prompt", "You are a wise teacher."])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(repeated, persona, "the same persona, the same answer")
    }

    func testPersonaOptionsAreRefusedWhereTheyCannotApply() throws {
        let moshi = packageRoot.appendingPathComponent("models/default").path
        let run = try runDuplex(["pipe", "--model", moshi, "--text-prompt", "You are a pirate."])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("PersonaPlex"), run.stderr)
        let dir = try personaFolder()
        let bad = try generate(dir, ["--voice-prompt", dir.appendingPathComponent("config.json").path]).0
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("config.json") && bad.stderr.contains("neither a WAV"), bad.stderr)
        let long = try generate(dir, ["--text-prompt", String(repeating: "a wise and patient teacher ", count: 40)]).0
        XCTAssertNotEqual(long.status, 0)
        XCTAssertTrue(long.stderr.contains("shorten the text prompt"), long.stderr)
    }
}
