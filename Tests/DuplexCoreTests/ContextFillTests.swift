import DuplexCore
import Foundation
import XCTest

/// `LMGen.fillContext`: the synthetic fill leaves a state of the very shape `steps` real calls
/// leave (ring occupancy, positions, offsets), so the next step reads as many KV entries and
/// costs what a step at that context costs.
final class ContextFillTests: XCTestCase {
    private static func tinyGen(context: Int, dim: Int = 32, heads: Int = 2) -> LMGen {
        var c = LMConfig.moshi7B
        c.dim = dim; c.numHeads = heads; c.numLayers = 2; c.context = context
        c.textCard = 50; c.textCardOut = 50; c.card = 64
        c.depformerDim = 16; c.depformerNumHeads = 2; c.depformerNumLayers = 1
        c.depformerDimFeedforward = Int(4.125 * 16)
        return LMGen(model: LMModel(store: WeightStore(randomSeed: 5), config: c), sampling: .greedy)
    }

    /// Everything that decides what the next temporal step reads and where RoPE puts it.
    private func assertSameShape(_ a: LMGen.State, _ b: LMGen.State, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.offset, b.offset, "\(what): LMGen offset", file: file, line: line)
        XCTAssertEqual(a.model.steps, b.model.steps, "\(what): temporal steps", file: file, line: line)
        XCTAssertEqual(a.model.nextStepContextEntries, b.model.nextStepContextEntries, "\(what): KV entries the next step reads",
                       file: file, line: line)
        XCTAssertEqual(a.model.nextStepKVBytes, b.model.nextStepKVBytes, "\(what): KV bytes", file: file, line: line)
        XCTAssertEqual(a.model.transformer.layers.count, b.model.transformer.layers.count)
        for (l, (x, y)) in zip(a.model.transformer.layers, b.model.transformer.layers).enumerated() {
            XCTAssertEqual(x.offset, y.offset, "\(what): layer \(l) offset", file: file, line: line)
            XCTAssertEqual(x.attention.offset, y.attention.offset, "\(what): layer \(l) attention offset (RoPE position)",
                           file: file, line: line)
            XCTAssertEqual(x.attention.cache.end, y.attention.cache.end, "\(what): layer \(l) ring end", file: file, line: line)
            XCTAssertEqual(x.attention.cache.positions, y.attention.cache.positions, "\(what): layer \(l) ring positions",
                           file: file, line: line)
        }
    }

    func testSyntheticFillHasTheShapeOfTheExactFill() throws {
        let gen = Self.tinyGen(context: 16)
        let user: [Int32] = [3, 1, 4, 1, 5, 9, 2, 6]
        for steps in [0, 1, 2, 15, 16, 17, 40, 57] {
            var exact = gen.makeState(), synthetic = gen.makeState()
            try gen.fillContext(&exact, steps: steps, exact: true)
            try gen.fillContext(&synthetic, steps: steps, seed: 9)
            assertSameShape(synthetic, exact, "after filling \(steps)")
            XCTAssertEqual(exact.model.nextStepContextEntries, 2 * min(steps + 1, 16), "\(steps): what a real step reads")
            let cache = synthetic.model.transformer.layers[0].attention.cache
            XCTAssertTrue((0..<cache.capacity).allSatisfy { cache.key(slot: $0).allSatisfy(\.isFinite) })
            // The next calls: the synthetic delay ring holds valid tokens where the real one does
            // (a −2 read back would throw), frames come out on the same calls, the shape stays equal.
            for call in 0..<3 {
                let a = try gen.step(userCodes: user, state: &exact)
                let b = try gen.step(userCodes: user, state: &synthetic)
                XCTAssertEqual(a == nil, b == nil, "\(steps)+\(call): a frame comes out on the same calls")
                if let b { XCTAssertTrue(b.allSatisfy { $0 >= 0 }, "\(steps)+\(call): \(b)") }
                assertSameShape(synthetic, exact, "after filling \(steps) and \(call + 1) more calls")
            }
        }
    }

    func testFillingRestartsTheConversation() throws {
        let gen = Self.tinyGen(context: 16)
        var state = gen.makeState()
        try gen.fillContext(&state, steps: 30)
        try gen.fillContext(&state, steps: 5)
        var fresh = gen.makeState()
        try gen.fillContext(&fresh, steps: 5, exact: true)
        assertSameShape(state, fresh, "refilled")
    }

    /// At the default model's context the next step attends over the whole ring, and pays for it.
    /// (16 heads of 4: the per-slot softmax work is per head, so the context's share of the step
    /// is large enough to see even in a debug build on a shared machine.)
    func testAStepAtAFilledContextReadsTheWholeRingAndCostsMore() throws {
        let context = 3000
        let gen = Self.tinyGen(context: context, dim: 64, heads: 16)
        var fresh = gen.makeState(), filled = gen.makeState()
        let start = DispatchTime.now().uptimeNanoseconds
        try gen.fillContext(&filled, steps: context)
        let fillSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        XCTAssertEqual(filled.offset, context)
        XCTAssertEqual(filled.model.nextStepContextEntries, 2 * context)
        XCTAssertEqual(fresh.model.nextStepContextEntries, 2)
        XCTAssertLessThan(fillSeconds, 5, "the synthetic fill must not run the steps")
        // The temporal transformer's part of the step (the depformer's does not depend on the
        // context), interleaved so that a busy machine slows both alike.
        let user = [Int32](repeating: 7, count: 8)
        var freshTimes: [Double] = [], filledTimes: [Double] = []
        for _ in 0..<9 {
            for isFilled in [false, true] {
                var ms = 0.0
                let t0 = DispatchTime.now().uptimeNanoseconds
                let stamp = { ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 }
                try user.withUnsafeBufferPointer { codes in
                    if isFilled {
                        _ = try gen.step(userCodes: codes, state: &filled, temporalDone: stamp)
                    } else {
                        _ = try gen.step(userCodes: codes, state: &fresh, temporalDone: stamp)
                    }
                }
                if isFilled { filledTimes.append(ms) } else { freshTimes.append(ms) }
            }
        }
        XCTAssertEqual(filled.model.nextStepContextEntries, 2 * context, "the ring stays full")
        let medianFresh = freshTimes.sorted()[4], medianFilled = filledTimes.sorted()[4]
        XCTAssertGreaterThan(medianFilled, 1.5 * medianFresh,
                             "a temporal step over 3000 cached steps (\(medianFilled) ms) must cost more than one over a few (\(medianFresh) ms)")
        print("temporal step, median of 9: \(medianFresh) ms fresh, \(medianFilled) ms at a full \(context)-step context")
    }
}
