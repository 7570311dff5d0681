@testable import DuplexCore
import Foundation
import XCTest

/// The tensor tables against Kyutai's own names: `tensor_names.json` (tools/reference/fixtures_names.py)
/// holds what moshi 0.2.13 builds for the tiny test configs, the default model and the released
/// configs, in both the module (`state_dict`) and the released-file (`checkpoint`) form.
final class TensorTableTests: XCTestCase {
    struct Entry {
        let key: String
        let model: String
        let config: Any
        let codebooks: Int
        let stateDict: [String: [Int]]
        let checkpoint: [String: [Int]]
    }

    static let expectedEntries: Set<String> = ["mimi_tiny", "mimi_released_q8", "mimi_released_q32", "lm_tiny", "lm_default",
                                               "lm_moshiko_7b"]

    /// The fixture's entries; a missing or stale fixture fails (it is committed, never optional).
    func entries(file: StaticString = #filePath, line: UInt = #line) throws -> [Entry] {
        guard let path = fixturePath("tensor_names.json"), let data = FileManager.default.contents(atPath: path),
              let root = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            XCTFail("Fixtures/tensor_names.json is missing or unreadable: run tools/reference/make_fixtures.py names", file: file, line: line)
            throw FixtureMissing()
        }
        XCTAssertEqual(root["format_version"] as? String, fixtureFormatVersion, "regenerate with tools/reference/make_fixtures.py names")
        XCTAssertEqual(root["moshi_version"] as? String, "0.2.13")
        let raw = try XCTUnwrap(root["entries"] as? [String: [String: Any]])
        XCTAssertEqual(Set(raw.keys), Self.expectedEntries, file: file, line: line)
        func shapes(_ any: Any?) throws -> [String: [Int]] { try XCTUnwrap(any as? [String: [Int]]) }
        return try raw.keys.sorted().map { key in
            let e = raw[key]!
            return Entry(key: key, model: try XCTUnwrap(e["model"] as? String), config: try XCTUnwrap(e["config"]),
                         codebooks: e["codebooks"] as? Int ?? 0, stateDict: try shapes(e["state_dict"]),
                         checkpoint: try shapes(e["checkpoint"]))
        }
    }

    struct FixtureMissing: Error {}

    func table(_ e: Entry) throws -> TensorTable {
        let json = try JSONSerialization.data(withJSONObject: e.config)
        switch e.model {
        case "mimi": return MimiTensorNames.table(try MimiConfig(kyutaiJSON: String(decoding: json, as: UTF8.self), codebooks: e.codebooks))
        case "lm": return LMTensorNames.table(try LMConfig(kyutaiConfigJSON: json))
        default: throw FixtureMissing()
        }
    }

    /// Same names, same shapes, nothing more, for every config.
    func testTablesEqualKyutaisCheckpointNamesAndShapes() throws {
        for e in try entries() {
            let t = try table(e)
            let mine = Dictionary(uniqueKeysWithValues: t.specs.map { ($0.name, $0.shape) })
            let missing = Set(e.checkpoint.keys).subtracting(mine.keys).sorted()
            let extra = Set(mine.keys).subtracting(e.checkpoint.keys).sorted()
            let misshaped = e.checkpoint.keys.sorted().filter { mine[$0] != nil && mine[$0] != e.checkpoint[$0] }
            XCTAssertTrue(missing.isEmpty, "\(e.key): the table lacks \(missing.prefix(10))")
            XCTAssertTrue(extra.isEmpty, "\(e.key): the table has extra \(extra.prefix(10))")
            XCTAssertTrue(misshaped.isEmpty, "\(e.key): shapes differ for \(misshaped.prefix(5).map { "\($0) \(mine[$0]!) vs \(e.checkpoint[$0]!)" })")
            XCTAssertEqual(t.specs.count, e.checkpoint.count, e.key)
            XCTAssertTrue(t.specs.allSatisfy { !$0.role.isEmpty }, e.key)
        }
    }

    /// The released files' sizes, as counted from their real headers (checkpoint-compat.md §0, §2.1).
    func testReleasedTableSizes() throws {
        XCTAssertEqual(MimiTensorNames.table(.released(codebooks: 8)).specs.count, 318)
        XCTAssertEqual(MimiTensorNames.table(.released(codebooks: 8)).parameterCount, 96_151_393)
        XCTAssertEqual(LMTensorNames.table(.moshi7B).specs.count, 355)
        XCTAssertEqual(LMTensorNames.table(.moshi7B).parameterCount, LMConfig.moshi7B.parameterCount)
    }

    /// The one rename between moshi 0.2.13's modules and the files: per-step attention projections
    /// `self_attn.{in,out}_projs.{s}.weight` are stacked step-major under the legacy
    /// `self_attn.in_proj_weight` / `self_attn.out_proj.weight`; every other name is the same.
    func testStateDictNamesMapToTheCheckpointNames() throws {
        let pattern = try NSRegularExpression(pattern: #"^(.*self_attn\.)(in|out)_projs\.(\d+)\.weight$"#)
        for e in try entries() {
            var mapped: [String: [Int]] = [:]
            var steps: [String: [Int]] = [:]
            for (name, shape) in e.stateDict {
                let range = NSRange(name.startIndex..., in: name)
                guard let m = pattern.firstMatch(in: name, range: range) else {
                    XCTAssertNil(mapped[name]); mapped[name] = shape; continue
                }
                let prefix = String(name[Range(m.range(at: 1), in: name)!])
                let target = prefix + (name[Range(m.range(at: 2), in: name)!] == "in" ? "in_proj_weight" : "out_proj.weight")
                steps[target, default: []].append(Int(name[Range(m.range(at: 3), in: name)!])!)
                let previous = mapped[target] ?? [0] + shape.dropFirst()
                XCTAssertEqual(Array(previous.dropFirst()), Array(shape.dropFirst()), "\(e.key): \(name)")
                mapped[target] = [previous[0] + shape[0]] + shape.dropFirst()
            }
            XCTAssertEqual(mapped, e.checkpoint, "\(e.key): renaming the state_dict does not give the checkpoint form")
            for (target, s) in steps { XCTAssertEqual(s.sorted(), Array(0..<s.count), "\(e.key): \(target) steps") }
            XCTAssertFalse(steps.isEmpty, "\(e.key): expected stacked attention projections")
        }
    }

    /// The committed weight fixtures hold exactly their table (the LM fixture also holds its records).
    func testWeightFixturesMatchTheirTables() throws {
        let mimi = try loadFixture("mimi_weights")
        let mimiTable = MimiTensorNames.table(try MimiConfig(kyutaiJSON: mimi.metadata["config"] ?? ""))
        XCTAssertTrue(mimiTable.compare(mimi).isExact, "\(mimiTable.compare(mimi).problems)")
        let lm = try loadFixture("lm_tiny")
        let lmTable = LMTensorNames.table(try LMConfig(kyutaiConfigJSON: Data((lm.metadata["config"] ?? "").utf8)))
        let c = lmTable.compare(lm)
        XCTAssertTrue(c.missing.isEmpty && c.misshaped.isEmpty && c.wrongType.isEmpty, "\(c.problems)")
        XCTAssertTrue(c.unexpected.allSatisfy { $0.name.hasPrefix("fixture.") }, "\(c.unexpected.map(\.name))")
    }

    /// Random weights: exactly the table's tensors, spread by kind as their names always said.
    func testRandomStoresMakeExactlyTheTable() throws {
        let mimiConfig = try MimiConfig(kyutaiJSON: #"{"seanet": {"dimension": 32, "n_filters": 4}, "quantizer": {"dimension": 8, "bins": 64}, "transformer": {"d_model": 32, "num_heads": 4, "num_layers": 2, "dim_feedforward": 64}}"#)
        let mimiStore = WeightStore(randomSeed: 5)
        _ = try Mimi(store: mimiStore, config: mimiConfig)
        XCTAssertNoThrow(try mimiStore.finish())
        XCTAssertEqual(mimiStore.requestedNames, Set(MimiTensorNames.table(mimiConfig).names))
        var lmConfig = LMConfig()
        (lmConfig.dim, lmConfig.numHeads, lmConfig.numLayers, lmConfig.textCard, lmConfig.textCardOut, lmConfig.card) = (32, 2, 2, 40, 40, 32)
        (lmConfig.depformerDim, lmConfig.depformerNumHeads, lmConfig.depformerNumLayers, lmConfig.depformerDimFeedforward) = (16, 2, 1, 66)
        let lmStore = WeightStore(randomSeed: 6)
        _ = LMModel(store: lmStore, config: lmConfig)
        XCTAssertNoThrow(try lmStore.finish())
        XCTAssertEqual(lmStore.requestedNames, Set(LMTensorNames.table(lmConfig).names))

        for t in [MimiTensorNames.table(.released()), LMTensorNames.table(.moshi7B), LMTensorNames.table(lmConfig)] {
            for s in t.specs {
                XCTAssertEqual(RandomWeights.kind(of: s), RandomWeights.kind(of: s.name, shape: s.shape), s.name)
            }
        }
    }

    /// A file checked against a table: every kind of problem named once, worded as the loader always did.
    func testComparisonNamesEveryProblem() {
        let t = TensorTable(model: "toy", specs: [
            TensorSpec("a.weight", [2, 3], .matrix, role: "a"),
            TensorSpec("c.conv.weight", [4, 2, 3], .conv, role: "c"),
            TensorSpec("b.alpha", [1, 1, 3], .norm, role: "b"),
            TensorSpec("x._initialized", [1], .buffer, role: "x", dtype: .any, required: false),
        ])
        let ok = t.compare(["a.weight": ([2, 3], .bf16), "c.conv.weight_g": ([4, 1, 1], .f32), "c.conv.weight_v": ([4, 2, 3], .f32),
                            "b.alpha": ([1, 1, 3], .f32)])
        XCTAssertTrue(ok.isExact)
        XCTAssertEqual(ok.weightNorm.map(\.name), ["c.conv.weight"])
        XCTAssertEqual(ok.absentOptional.map(\.name), ["x._initialized"])
        XCTAssertEqual(ok.matched, 3)
        let bad = t.compare(["a.weight": ([3, 2], .i64), "c.conv.weight_v": ([4, 2, 3], .f32), "z": ([1], .f32),
                             "x._initialized": ([1], .bool)])
        XCTAssertEqual(bad.problems.map(\.message), [
            "missing tensor c.conv.weight_g (expected shape [4, 1, 1])",
            "missing tensor b.alpha (expected shape [1, 1, 3])",
            "a.weight has shape [3, 2], expected [2, 3]",
            "a.weight is stored as I64, expected a float type (F32, F16, BF16 or F64) or a quantized format duplex implements",
            "unexpected tensor z [1] (not part of this model)",
        ])
        XCTAssertEqual(t.resolve("c.conv.weight_g")?.shape, [4, 1, 1])
        XCTAssertNil(t.resolve("a.weight_g"), "only conv kernels have weight-norm pairs")
    }
}
