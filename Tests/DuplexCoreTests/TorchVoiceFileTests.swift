import DuplexCore
import Foundation
import XCTest

/// PyTorch `.pt` files as PersonaPlex ships its voices (`voices/*.pt`): the files torch.save wrote
/// (tools/reference/fixtures_personaplex_voice.py) read back exactly, and broken or hostile ones
/// refused with one clean error line naming the file, without running anything.
final class TorchVoiceFileTests: XCTestCase {
    private func fixture(_ name: String) throws -> String {
        try requireFixture("personaplex_voice_\(name).pt", generator: "personaplex_voice")
    }

    private func expected() throws -> SafetensorsFile { try loadFixture("personaplex_voice") }

    private func write(_ bytes: [UInt8], _ name: String) -> String {
        let path = temporaryPath(name)
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)), path)
        return path
    }

    private func bytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

    /// Opening `path` as a voice file fails with `kind`, one line, naming the file and `mentions`.
    @discardableResult
    private func assertFails(_ path: String, _ kind: WeightFileError.Kind, mentions: [String] = [],
                             file: StaticString = #filePath, line: UInt = #line) -> WeightFileError? {
        let error = assertOpenFails(path, kind, mentions: mentions, open: { try TorchVoiceFile(path: $0).frames }, file: file, line: line)
        if let error { XCTAssertFalse(error.description.contains("\n"), "one line: \(error)", file: file, line: line) }
        return error
    }

    /// `actual` equals the expectation `name` exactly: dtype, shape and every value.
    private func assertEqual(_ actual: TorchTensor, _ name: String, _ reference: SafetensorsFile,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        guard let entry = reference[name] else { return XCTFail("no expectation \(name)", file: file, line: line) }
        XCTAssertEqual(actual.dtype, entry.dtype, name, file: file, line: line)
        XCTAssertEqual(actual.shape, entry.shape, name, file: file, line: line)
        if entry.dtype.isFloatingPoint {
            XCTAssertEqual(actual.floatTensor?.data, try reference.floatTensor(name).data, name, file: file, line: line)
        } else {
            XCTAssertEqual(actual.int64, try reference.intTensor(name).values, name, file: file, line: line)
        }
    }

    // MARK: files torch.save wrote

    func testVoiceSavedAsNVIDIASavesIt() throws {
        let reference = try expected()
        for dtype in ["bf16", "f32"] {
            let voice = try TorchVoiceFile(path: try fixture(dtype))
            XCTAssertEqual(voice.embeddingsDType, dtype == "bf16" ? .bf16 : .f32)
            XCTAssertEqual(voice.embeddings.shape, [4, 1, 1, 32])
            XCTAssertEqual(voice.embeddings.data, try reference.floatTensor("\(dtype).embeddings").data, dtype)
            XCTAssertEqual([voice.frames, voice.width, voice.streams, voice.cacheColumns], [4, 32, 17, 4])
            let cache = try reference.intTensor("\(dtype).cache")
            XCTAssertEqual(voice.cacheShape, cache.shape)
            XCTAssertEqual(voice.cache, cache.values)
            XCTAssertEqual(Array(voice.embedding(2)), Array(voice.embeddings.data[64..<96]))
            // After a 5-frame prompt, ring slot 4 mod 4 holds column 4: text 3 (PAD), the user's sine code.
            XCTAssertEqual(voice.cache(stream: 0, slot: 0), 3)
            XCTAssertEqual(voice.cache(stream: 9, slot: 0), 430)
        }
    }

    /// The voice file NVIDIA's own LMGen wrote (tools/reference/fixtures_personaplex.py): its
    /// embeddings are the temporal transformer's first T inputs, and ring slot T mod 4 of its
    /// cache is the delay column T that the next step embeds.
    func testVoiceWrittenByNVIDIAsLMGen() throws {
        let records = try loadFixture("personaplex_tiny_records")
        let voice = try TorchVoiceFile(path: try requireFixture("personaplex_tiny_voice.pt", generator: "personaplex"))
        XCTAssertEqual(voice.embeddingsDType, .f32)
        XCTAssertEqual(voice.embeddings.shape, [4, 1, 1, 64])
        XCTAssertEqual(voice.embeddings.data, try records.floatTensor("fixture.voice_embeddings").data)
        XCTAssertEqual(voice.cacheShape, [1, 17, 4])
        XCTAssertEqual(voice.cache, try records.intTensor("fixture.voice_cache").values)
        let inputs = try records.floatTensor("fixture.input_embeddings").data
        XCTAssertEqual(voice.embeddings.data, Array(inputs[0..<(4 * 64)]))
        let columns = try records.intTensor("fixture.columns").values
        XCTAssertEqual((0..<17).map { voice.cache(stream: $0, slot: 4 % 4) }, Array(columns[(4 * 17)..<(5 * 17)]))
    }

    func testStridedOffsetAndSharedTensorsAndNestedValues() throws {
        let reference = try expected()
        let file = try TorchFile(path: try fixture("views"))
        let tensorNames = reference.names.filter { $0.hasPrefix("views.") }.map { String($0.dropFirst("views.".count)) }
        for name in tensorNames { try assertEqual(try file.tensor(name), "views.\(name)", reference) }

        let plain = try JSONSerialization.jsonObject(with: Data(reference.metadata["views_plain"]!.utf8)) as! [String: Any]
        XCTAssertEqual(Set(file.names), Set(tensorNames).union(plain.keys))
        for (name, value) in plain {
            switch file.values[name] {
            case .int(let i)?: XCTAssertEqual(i, (value as? NSNumber)?.int64Value, name)
            case .float(let f)?: XCTAssertEqual(f, (value as? NSNumber)?.doubleValue, name)
            case .bool(let b)?: XCTAssertEqual(b, (value as? NSNumber)?.boolValue, name)
            case .string(let s)?: XCTAssertEqual(s, value as? String, name)
            case .none?: XCTAssertTrue(value is NSNull, name)
            default: XCTFail("\(name): read \(String(describing: file.values[name])), expected \(value)")
            }
        }
        XCTAssertEqual(file.values["nested.big"], .int(1 << 40))
        XCTAssertEqual(file.values["nested.negative"], .int(-5))
        XCTAssertEqual(file.values["nested.scale"], .float(0.5))
        XCTAssertEqual(file.values["nested.pair.1"], .float(2))
        XCTAssertEqual(file.values["nested.flag"], .bool(true))
        // The same strided embeddings and offset cache, read as a voice.
        let voice = try TorchVoiceFile(path: try fixture("views"))
        XCTAssertEqual(voice.embeddings.data, try reference.floatTensor("views.embeddings").data)
        XCTAssertEqual(voice.cache, try reference.intTensor("views.cache").values)
    }

    // MARK: hostile pickles

    func testGlobalOsSystemIsRefusedWithoutRunningIt() throws {
        let marker = try expected().metadata["executed_marker"]!
        try? FileManager.default.removeItem(atPath: marker)
        assertFails(try fixture("bad_global"), .forbiddenGlobal, mentions: ["GLOBAL os.system", "offset 2", "nothing in it is executed"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: marker), "the pickle's command ran")
    }

    func testUnknownOpcodeIsRefusedByName() throws {
        assertFails(try fixture("bad_opcode"), .badPickle, mentions: ["0x69 INST", "offset 13"])
    }

    func testNestingAndCyclesAreBounded() throws {
        assertFails(try fixture("bad_nesting"), .badPickle, mentions: ["nested more than 32"])
        assertFails(try fixture("bad_cycle"), .badPickle, mentions: ["holds itself"])
        assertFails(try fixture("bad_fanout"), .badPickle, mentions: ["shared containers are unfolded"])
    }

    // MARK: tensors that do not fit their storage

    func testTensorReachingPastItsStorage() throws {
        assertFails(try fixture("bad_short_storage"), .offsetsOutOfRange, mentions: ["embeddings", "size [8]", "holds 4 F32 elements"])
    }

    func testStorageMemberShorterThanItsElementCount() throws {
        assertFails(try fixture("bad_storage_bytes"), .truncated, mentions: ["embeddings", "16 bytes", "need 32"])
    }

    // MARK: broken archives and other files

    func testCompressedArchiveIsRefused() throws {
        assertFails(try fixture("bad_deflated"), .unsupportedCompression, mentions: ["deflate", "data.pkl"])
    }

    func testTruncatedArchive() throws {
        let whole = try bytes(try fixture("bf16"))
        assertFails(write(Array(whole.prefix(whole.count / 2)), "half.pt"), .truncated, mentions: ["truncated"])
        // Every cut is one clean error, never a crash.
        for cut in stride(from: 0, to: whole.count, by: 37) {
            let path = write(Array(whole.prefix(cut)), "cut.pt")
            XCTAssertThrowsError(try TorchVoiceFile(path: path), "cut at \(cut)") { error in
                XCTAssertTrue(error is WeightFileError, "cut at \(cut): \(error)")
                XCTAssertTrue("\(error)".hasPrefix(path) && !"\(error)".contains("\n"), "cut at \(cut): \(error)")
            }
        }
    }

    /// Any single corrupted byte is either caught (structure or CRC-32) or harmless: the values
    /// read are then exactly the saved ones.
    func testEveryFlippedByteIsCaughtOrHarmless() throws {
        let reference = try expected()
        let good = try bytes(try fixture("bf16"))
        let embeddings = try reference.floatTensor("bf16.embeddings").data, cache = try reference.intTensor("bf16.cache").values
        var caught = 0
        for i in good.indices {
            var b = good
            b[i] ^= 0x5A
            let path = write(b, "flipped.pt")
            do {
                let voice = try TorchVoiceFile(path: path)
                XCTAssertEqual(voice.embeddings.data, embeddings, "byte \(i)")
                XCTAssertEqual(voice.cache, cache, "byte \(i)")
            } catch let error as WeightFileError {
                XCTAssertFalse(error.description.contains("\n"), "byte \(i): \(error)")
                caught += 1
            }
        }
        XCTAssertGreaterThan(caught, good.count / 2)
    }

    func testCorruptStorageFailsItsChecksum() throws {
        var b = try bytes(try fixture("f32"))
        // The embeddings' storage is data/0; flip a byte in its middle (found by its float values).
        let reference = try expected().floatTensor("f32.embeddings").data
        let needle = withUnsafeBytes(of: reference[10].bitPattern.littleEndian) { Array($0) }
        let at = (0..<(b.count - 4)).first { Array(b[$0..<($0 + 4)]) == needle }!
        b[at] ^= 1
        assertFails(write(b, "crc.pt"), .checksumMismatch, mentions: ["data/0", "CRC-32"])
    }

    func testOtherFilesAreNotVoices() throws {
        assertFails(try requireFixture("personaplex_voice.safetensors"), .badMagic, mentions: ["not a zip archive"])
        assertFails(write(Array("embeddings = [1, 2]\n".utf8), "text.pt"), .badMagic, mentions: ["not a zip archive"])
        assertFails(write([], "empty.pt"), .empty)
        assertFails(write([0x80, 0x02, 0x8A, 0x0A], "legacy.pt"), .unsupportedVersion, mentions: ["legacy"])
        assertFails(temporaryPath("does-not-exist.pt"), .io, mentions: ["cannot open"])
        assertFails(try fixture("not_voice"), .missingTensor, mentions: ["embeddings", "weights", "step"])
        // It is still a good torch.save file.
        let file = try TorchFile(path: try fixture("not_voice"))
        XCTAssertEqual(file.names, ["weights", "step"])
        XCTAssertEqual(file.values["step"], .int(3))
    }
}
