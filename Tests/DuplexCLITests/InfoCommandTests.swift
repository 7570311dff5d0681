import DuplexCore
import Foundation
import XCTest

/// `duplex info` end to end: the built binary is run as a user runs it, and its exit status,
/// stdout and stderr are checked. Bad input must end in one clean "Error: …" line on stderr and
/// a non-zero status, never a crash or a stack trace.
final class InfoCommandTests: XCTestCase {
    private func run(_ arguments: [String]) throws -> CLIRun { try runDuplex(arguments) }
    private func scratch() throws -> URL { try cliScratch() }

    /// A small checkpoint with Mimi's tensor names: 3·4 bf16 + 2 + 5 f32 values.
    private func mimiLike(_ name: String, poison: Bool = false) throws -> String {
        var w = SafetensorsWriter(metadata: ["format_version": "1"])
        w.add("encoder.model.0.conv.conv.weight", Tensor(shape: [3, 4, 1], data: (0..<12).map { Float($0) / 4 - 1 }), as: .bf16)
        w.add("encoder.model.0.conv.conv.bias", Tensor(shape: [2], data: [-2, 3]))
        w.add("quantizer.rvq_first.vq.layers.0._codebook.embedding_sum",
              Tensor(shape: [5], data: poison ? [0, .nan, .infinity, 1, 2] : [0, 1, 2, 1, 0]))
        let path = try scratch().appendingPathComponent(name).path
        try w.write(to: path)
        return path
    }

    func testInfoWithoutAModelDescribesTheBuild() throws {
        let r = try run(["info"])
        XCTAssertEqual(r.status, 0, r.stderr)
        for line in ["cores:", "OpenBLAS:", "ALSA library:", "Opus library:", "Ogg library:      linked"] {
            XCTAssertTrue(r.stdout.contains(line), "missing \(line) in:\n\(r.stdout)")
        }
    }

    func testInfoDescribesACheckpoint() throws {
        let path = try mimiLike("mimi.safetensors")
        let r = try run(["info", "--model", path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr, "")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, path)
        for line in ["  kind:        Mimi codec", "  tensors:     3", "  parameters:  19 (19)", "    BF16  12 (12)",
                     "    F32   7 (7)", "  bytes:       52 B (52)", "  meta format_version: 1"] {
            XCTAssertTrue(lines.contains(line), "missing \"\(line)\" in:\n\(r.stdout)")
        }
    }

    /// The file against its model's tensor table: what it lacks or has extra, and with
    /// `--tensors` every tensor with its role.
    func testInfoChecksTheFileAgainstTheTensorTable() throws {
        let path = try mimiLike("table.safetensors")
        let r = try run(["info", "--model", path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("  table:       Mimi for the released Mimi: 318 entries; 283 missing, 0 extra, 3 misshaped, 0 wrongly typed"),
                      r.stdout)
        XCTAssertTrue(r.stdout.contains("    misshaped:  encoder.model.0.conv.conv.weight is [3, 4, 1], the table says [64, 1, 7]"), r.stdout)
        XCTAssertTrue(r.stdout.contains("    missing:    … and 273 more"), r.stdout)

        let listed = try run(["info", "--model", path, "--tensors"])
        XCTAssertEqual(listed.status, 0, listed.stderr)
        let lines = listed.stdout.split(separator: "\n").map(String.init)
        let conv = try XCTUnwrap(lines.first { $0.hasPrefix("    decoder.model.2.convtr.convtr.weight ") }, listed.stdout)
        XCTAssertTrue(conv.contains("[1024, 512, 16]") && conv.contains("SEANet decoder stage 0 upsampling transposed conv (stride 8) kernel [MISSING]"), conv)
        XCTAssertTrue(lines.contains { $0.contains("encoder_transformer.transformer.layers.3.self_attn.in_proj_weight") &&
                                       $0.contains("encoder transformer layer 3 attention in-projection (q,k,v stacked)") }, listed.stdout)
        XCTAssertFalse(listed.stdout.contains("… and"), "--tensors lists everything")
    }

    func testScanReportsTheRangeOrThePoison() throws {
        let clean = try run(["info", "--model", try mimiLike("clean.safetensors"), "--scan"])
        XCTAssertEqual(clean.status, 0, clean.stderr)
        XCTAssertTrue(clean.stdout.contains("  values:      19, range [-2.0, 3.0]"), clean.stdout)
        XCTAssertTrue(clean.stdout.contains("  NaN/Inf:     none"), clean.stdout)

        let poisoned = try run(["info", "--model", try mimiLike("poisoned.safetensors", poison: true), "--scan"])
        XCTAssertEqual(poisoned.status, 3, "NaN/Inf must fail with status 3")
        XCTAssertTrue(poisoned.stdout.contains("POISONED:    1 NaN, 1 Inf in quantizer.rvq_first.vq.layers.0._codebook.embedding_sum"),
                      poisoned.stdout)
    }

    func testACorruptFileIsOneCleanErrorLine() throws {
        let good = try Data(contentsOf: URL(fileURLWithPath: try mimiLike("whole.safetensors")))
        let cut = try scratch().appendingPathComponent("cut.safetensors")
        try good.dropLast(3).write(to: cut)
        let r = try run(["info", "--model", cut.path])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stdout, "")
        XCTAssertTrue(r.stderr.hasPrefix("Error: \(cut.path): truncated"), r.stderr)
        XCTAssertTrue(r.stderr.contains("quantizer.rvq_first.vq.layers.0._codebook.embedding_sum"), r.stderr)
        XCTAssertFalse(r.stderr.contains("Usage"), r.stderr)

        let garbage = try scratch().appendingPathComponent("garbage.safetensors")
        try Data("this is not a safetensors file".utf8).write(to: garbage)
        let g = try run(["info", "--model", garbage.path, "--scan"])
        XCTAssertEqual(g.status, 1)
        XCTAssertTrue(g.stderr.hasPrefix("Error: \(garbage.path): header length field says"), g.stderr)
    }

    func testAMissingPathIsACleanError() throws {
        let missing = try scratch().appendingPathComponent("nothing-here").path
        let r = try run(["info", "--model", missing])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "Error: \(missing): no such file or folder\n")
    }

    func testAFolderIsDescribedFileByFileAndFailsIfAnyFileIsBad() throws {
        let folder = try scratch().appendingPathComponent("model-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Data(#"{"dim": 4096, "num_layers": 32, "ignored": true}"#.utf8).write(to: folder.appendingPathComponent("config.json"))
        try FileManager.default.copyItem(atPath: try mimiLike("for-folder.safetensors"), toPath: folder.appendingPathComponent("a.safetensors").path)
        try Data([1, 2, 3]).write(to: folder.appendingPathComponent("b.safetensors"))
        try Data().write(to: folder.appendingPathComponent("tokenizer_spm_32k_3.model"))

        let r = try run(["info", "--model", folder.path])
        XCTAssertEqual(r.status, 1)
        for line in ["model folder \(folder.path)", "  config.json: 3 keys", "    dim: 4096", "    num_layers: 32",
                     "  kind:        Mimi codec", "  tokenizer: tokenizer_spm_32k_3.model"] {
            XCTAssertTrue(r.stdout.contains(line), "missing \"\(line)\" in:\n\(r.stdout)")
        }
        XCTAssertTrue(r.stderr.contains("error: \(folder.path)/b.safetensors: file is 3 bytes"), r.stderr)
        XCTAssertTrue(r.stderr.contains("Error: 1 of 2 weight files in \(folder.path) could not be read"), r.stderr)

        try Data("{not json".utf8).write(to: folder.appendingPathComponent("config.json"))
        let bad = try run(["info", "--model", folder.path])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("config.json: not a readable JSON object"), bad.stderr)
    }

    func testUnknownOptionsAreUsageErrors() throws {
        let r = try run(["info", "--no-such-option"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("Unknown option"), r.stderr)
    }
}
