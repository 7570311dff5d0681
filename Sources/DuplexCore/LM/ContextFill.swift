import Foundation

/// Bringing a conversation to a filled context without living through it.
///
/// A temporal step attends over every step still in its KV ring, so its cost grows with the
/// conversation until the ring (`LMConfig.context`, 3000 steps = 4 minutes for Moshi) is full:
/// for the embedded default model a step at a full ring costs several times one at frame 10.
/// Benchmarks that stop after a few dozen frames never see that. `fillContext` puts a fresh
/// state where `steps` calls would have left it, so the next `step` pays the real price:
///
///     var state = gen.makeState()
///     try gen.fillContext(&state, steps: 3000)          // synthetic: one ring's worth of copies
///     _ = try gen.step(userCodes: codes, state: &state)  // attends over 3000 entries
///
/// The synthetic fill is not a conversation (its keys and values are random rows, the delay
/// ring holds random tokens): it reproduces the *shape* a real one leaves — every temporal
/// layer's ring holds the same absolute positions in the same slots, every offset (RoPE's
/// position, the attention window, the step counter, LMGen's delay-ring column) is what
/// `steps` calls make it — so the cost and the mask of every later step are exactly those of a
/// conversation `steps` frames old. `exact: true` runs the `steps` real calls instead (zero user
/// codes), for tests and small models: the 7B at 3000 steps takes half an hour.
extension LMGen {
    /// Restarts `state` (as `State.reset()`) and leaves it as `steps` calls of `step` would:
    /// same KV-ring occupancy and positions in every temporal layer, same offsets and call count.
    /// The depformer's caches are per-frame (cleared by every step) and need nothing.
    ///
    /// - Parameters:
    ///   - steps: calls to account for (≥ 0; beyond `config.context` the ring simply stays full).
    ///   - seed: the synthetic keys, values and delay-ring tokens (unit Gaussian rows; tokens
    ///     uniform in each stream's vocabulary; the user's streams hold code 0, as in the exact fill).
    ///   - exact: run `steps` real calls with user code 0 instead (slow: `steps` full LM steps;
    ///     the sampler's random stream advances as they draw).
    ///
    /// Not for the per-frame path: the synthetic fill allocates a pool of 61 rows per layer in
    /// turn (1 MB for the 7B) and writes at most one ring per layer, in the rings' own element
    /// type (1.6 GB of bf16 for the 7B at 3000).
    public func fillContext(_ state: inout State, steps: Int, seed: UInt64 = 0, exact: Bool = false) throws {
        precondition(steps >= 0, "fillContext: steps must be ≥ 0")
        state.reset()
        let c = config
        if exact {
            let zeros = [Int32](repeating: 0, count: c.userStreams)
            try zeros.withUnsafeBufferPointer { codes in
                for _ in 0..<steps { _ = try step(userCodes: codes, state: &state) }
            }
            return
        }
        var rng = SplitMix64(seed: seed)
        // Temporal transformer: every layer's ring as after `steps` appends; every offset (RoPE's
        // position, the step counter, LMGen's call count) is read from the rings, so it follows.
        for l in state.model.transformer.layers.indices {
            // In place (a copy of the layer's state would duplicate its ring on write).
            let dim = state.model.transformer.layers[l].attention.cache.dim
            // A prime number of rows, so neighbouring slots (and a slot's key and value) differ.
            let poolRows = min(61, state.model.transformer.layers[l].attention.cache.capacity)
            let pool = (0..<(poolRows * dim)).map { _ in rng.nextGaussian() }
            pool.withUnsafeBufferPointer {
                state.model.transformer.layers[l].attention.cache.advance(by: steps, pool: $0.baseAddress!, poolRows: poolRows)
            }
        }
        // LMGen's delay ring: the writes of the last `ringLength` calls (older ones are
        // overwritten), so the same columns hold tokens and the same ones still hold −2.
        let ct = ringLength
        let firstUser = 1 + c.generatedStreams
        for o in max(0, steps - ct)..<steps {
            for u in 0..<c.userStreams {
                let s = firstUser + u
                state.cache[s * ct + (o + c.delays[s]) % ct] = 0
            }
            state.cache[(o + 1) % ct] = Int32(rng.next() % UInt64(c.textCardOut))
            for s in 1..<(1 + c.generatedStreams) { state.cache[s * ct + (o + 1) % ct] = Int32(rng.next() % UInt64(c.card)) }
        }
        if steps > c.maxDelay {
            for s in 0...c.generatedStreams { state.output[s] = state.cache[s * ct + (steps - c.maxDelay + c.delays[s]) % ct] }
        }
    }
}

extension LMModel.State {
    /// KV entries the next temporal step will attend to, its own included, summed over layers
    /// (the temporal ring is the attention window: its capacity is the context).
    public var nextStepContextEntries: Int {
        transformer.layers.reduce(0) { total, layer in
            let cache = layer.attention.cache, query = layer.attention.offset
            // The step's own entry overwrites the slot of position query − capacity, outside the window.
            return total + 1 + cache.visibleEntries(query: query, window: cache.capacity)
        }
    }

    /// Bytes of keys and values the next LM step reads from its KV rings: every entry the
    /// temporal step sees (`nextStepContextEntries`) at its ring's bytes per entry (its element
    /// type's), plus the depformer's, whose depth step k reads the k + 1 entries of this frame.
    /// Masked slots are skipped, not read.
    public var nextStepKVBytes: Int {
        let temporal = transformer.layers.reduce(0) { total, layer in
            let cache = layer.attention.cache, query = layer.attention.offset
            return total + (1 + cache.visibleEntries(query: query, window: cache.capacity)) * cache.bytesPerEntry
        }
        let depth = depformer.transformer.layers.first?.attention.cache.capacity ?? 0
        let depformer = depformer.transformer.layers.reduce(0) { total, layer in
            total + depth * (depth + 1) / 2 * layer.attention.cache.bytesPerEntry
        }
        return temporal + depformer
    }
}
