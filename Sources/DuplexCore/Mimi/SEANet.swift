import Foundation

/// SEANet residual block (`SEANetResnetBlock`, true skip): x + conv₂(ELU(conv₁(ELU(x)))), with
/// conv₁ = `<prefix>block.1` (D → D/compress, residual kernel, dilation) and
/// conv₂ = `<prefix>block.3` (→ D, kernel 1). Works in place on time-major rows x[T, D].
final class SEANetResBlock: Sendable {
    let dim: Int
    let conv1: StreamingConv1d
    let conv2: StreamingConv1d

    init(store: WeightStore, names: MimiTensorNames.ResBlock, dim: Int, kernel: Int, dilation: Int, compress: Int) {
        self.dim = dim
        let hidden = dim / compress
        conv1 = StreamingConv1d(store: store, names: names.conv1, inChannels: dim, outChannels: hidden, kernel: kernel, dilation: dilation)
        conv2 = StreamingConv1d(store: store, names: names.conv2, inChannels: hidden, outChannels: dim, kernel: 1)
    }

    struct State: Sendable {
        var conv1: StreamingConv1d.State
        var conv2: StreamingConv1d.State
        mutating func reset() { conv1.reset(); conv2.reset() }
    }

    func makeState(maxSteps: Int) -> State {
        State(conv1: conv1.makeState(maxSteps: maxSteps), conv2: conv2.makeState(maxSteps: maxSteps))
    }

    func scratchCount(maxSteps: Int) -> Int {
        max(conv1.scratchCount(maxSteps: maxSteps), conv2.scratchCount(maxSteps: maxSteps))
    }

    func step(_ x: UnsafeMutablePointer<Float>, steps: Int, state: inout State, scratch: UnsafeMutablePointer<Float>) {
        Activations.eluVectorized(x, into: conv1.input(state.conv1), count: steps * dim)
        let hidden = conv2.input(state.conv2)
        conv1.step(steps: steps, into: hidden, state: &state.conv1, scratch: scratch)
        Activations.eluVectorized(hidden, into: hidden, count: steps * conv1.outChannels)
        // The skip connection is the accumulate: x ← x + W₂·h + b₂.
        conv2.step(steps: steps, into: x, accumulate: true, state: &state.conv2, scratch: scratch)
    }
}

/// SEANet encoder (`encoder.model.<i>`): conv(1 → F, kernel 7), then per ratio (4, 5, 6, 8 — the
/// decoder's order reversed) residual blocks, ELU and a strided conv (kernel 2·ratio) doubling the
/// channels, then ELU and conv(→ dimension, kernel 3). Samples [T, 1] → latent [T/hop, dimension].
final class SEANetEncoder: Sendable {
    struct Stage: Sendable {
        let channels: Int
        let ratio: Int
        let blocks: [SEANetResBlock]
        let down: StreamingConv1d
    }

    let first: StreamingConv1d
    let stages: [Stage]
    let last: StreamingConv1d

    init(store: WeightStore, names n: MimiTensorNames, config c: MimiConfig) {
        first = StreamingConv1d(store: store, names: n.encoderFirst, inChannels: 1, outChannels: c.filters, kernel: c.kernelSize)
        var channels = c.filters
        var stages: [Stage] = []
        for (ratio, stageNames) in zip(c.ratios.reversed(), n.encoderStages) {
            var blocks: [SEANetResBlock] = []
            for (j, b) in stageNames.blocks.enumerated() {
                blocks.append(SEANetResBlock(store: store, names: b, dim: channels, kernel: c.residualKernelSize,
                                             dilation: MimiTensorNames.dilation(c, block: j), compress: c.compress))
            }
            let down = StreamingConv1d(store: store, names: stageNames.down, inChannels: channels,
                                       outChannels: 2 * channels, kernel: 2 * ratio, stride: ratio)
            stages.append(Stage(channels: channels, ratio: ratio, blocks: blocks, down: down))
            channels *= 2
        }
        last = StreamingConv1d(store: store, names: n.encoderLast, inChannels: channels, outChannels: c.dimension,
                               kernel: c.lastKernelSize)
        self.stages = stages
    }

    struct StageState: Sendable {
        /// [steps, channels]: the residual stream of this stage.
        let x: StateBuffer
        var blocks: [SEANetResBlock.State]
        var down: StreamingConv1d.State
    }

    struct State: Sendable {
        var first: StreamingConv1d.State
        var stages: [StageState]
        var last: StreamingConv1d.State

        mutating func reset() {
            first.reset()
            for i in stages.indices {
                for j in stages[i].blocks.indices { stages[i].blocks[j].reset() }
                stages[i].down.reset()
            }
            last.reset()
        }
    }

    /// `maxSamples` per call (a multiple of the hop).
    func makeState(maxSamples: Int) -> State {
        var steps = maxSamples
        var stageStates: [StageState] = []
        for s in stages {
            stageStates.append(StageState(x: StateBuffer(steps * s.channels), blocks: s.blocks.map { $0.makeState(maxSteps: steps) },
                                          down: s.down.makeState(maxSteps: steps)))
            steps /= s.ratio
        }
        return State(first: first.makeState(maxSteps: maxSamples), stages: stageStates, last: last.makeState(maxSteps: steps))
    }

    func scratchCount(maxSamples: Int) -> Int {
        var steps = maxSamples
        var n = first.scratchCount(maxSteps: steps)
        for s in stages {
            for b in s.blocks { n = max(n, b.scratchCount(maxSteps: steps)) }
            n = max(n, s.down.scratchCount(maxSteps: steps))
            steps /= s.ratio
        }
        return max(n, last.scratchCount(maxSteps: steps))
    }

    /// Where the caller writes the samples of the next call.
    func input(_ state: State) -> UnsafeMutablePointer<Float> { first.input(state.first) }

    /// Encodes `samples` samples written at `input(state)` into y[samples/hop, dimension].
    func step(samples: Int, into y: UnsafeMutablePointer<Float>, state: inout State, scratch: UnsafeMutablePointer<Float>,
              profile: MimiProfile? = nil) {
        var steps = samples
        first.step(steps: steps, into: state.stages[0].x.pointer, state: &state.first, scratch: scratch)
        profile?.mark(.encoderIn)
        for i in stages.indices {
            let stage = stages[i]
            let x = state.stages[i].x.pointer
            for j in stage.blocks.indices {
                stage.blocks[j].step(x, steps: steps, state: &state.stages[i].blocks[j], scratch: scratch)
            }
            profile?.mark(.encoderRes(i))
            Activations.eluVectorized(x, into: stage.down.input(state.stages[i].down), count: steps * stage.channels)
            let next = i + 1 < stages.count ? state.stages[i + 1].x.pointer : last.input(state.last)
            stage.down.step(steps: steps, into: next, state: &state.stages[i].down, scratch: scratch)
            profile?.mark(.encoderDown(i))
            steps /= stage.ratio
        }
        let lastInput = last.input(state.last)
        Activations.eluVectorized(lastInput, into: lastInput, count: steps * last.inChannels)
        last.step(steps: steps, into: y, state: &state.last, scratch: scratch)
        profile?.mark(.encoderOut)
    }
}

/// SEANet decoder (`decoder.model.<i>`): conv(dimension → F·2ⁿ, kernel 7), then per ratio
/// (8, 6, 5, 4) ELU, a transposed conv (kernel 2·ratio) halving the channels and residual
/// blocks, then ELU and conv(F → 1, kernel 3). No final activation. Latent [T, dimension] →
/// samples [T·hop, 1].
final class SEANetDecoder: Sendable {
    struct Stage: Sendable {
        /// Output channels of the transposed conv (the residual blocks' width).
        let channels: Int
        let ratio: Int
        let up: StreamingConvTranspose1d
        let blocks: [SEANetResBlock]
    }

    let first: StreamingConv1d
    let stages: [Stage]
    let last: StreamingConv1d

    init(store: WeightStore, names n: MimiTensorNames, config c: MimiConfig) {
        var channels = c.filters << c.ratios.count
        first = StreamingConv1d(store: store, names: n.decoderFirst, inChannels: c.dimension, outChannels: channels,
                                kernel: c.kernelSize)
        var stages: [Stage] = []
        for (ratio, stageNames) in zip(c.ratios, n.decoderStages) {
            let up = StreamingConvTranspose1d(store: store, names: stageNames.up, inChannels: channels,
                                              outChannels: channels / 2, kernel: 2 * ratio, stride: ratio)
            channels /= 2
            var blocks: [SEANetResBlock] = []
            for (j, b) in stageNames.blocks.enumerated() {
                blocks.append(SEANetResBlock(store: store, names: b, dim: channels, kernel: c.residualKernelSize,
                                             dilation: MimiTensorNames.dilation(c, block: j), compress: c.compress))
            }
            stages.append(Stage(channels: channels, ratio: ratio, up: up, blocks: blocks))
        }
        last = StreamingConv1d(store: store, names: n.decoderLast, inChannels: channels, outChannels: 1,
                               kernel: c.lastKernelSize)
        self.stages = stages
    }

    struct StageState: Sendable {
        var up: StreamingConvTranspose1d.State
        /// [steps, channels]: the residual stream of this stage.
        let x: StateBuffer
        var blocks: [SEANetResBlock.State]
    }

    struct State: Sendable {
        var first: StreamingConv1d.State
        /// [steps, channels of the first conv].
        let h: StateBuffer
        var stages: [StageState]
        var last: StreamingConv1d.State

        mutating func reset() {
            first.reset()
            for i in stages.indices {
                stages[i].up.reset()
                for j in stages[i].blocks.indices { stages[i].blocks[j].reset() }
            }
            last.reset()
        }
    }

    /// `maxSteps` latent rows per call.
    func makeState(maxSteps: Int) -> State {
        var steps = maxSteps
        var stageStates: [StageState] = []
        for s in stages {
            let up = s.up.makeState(maxSteps: steps)
            steps *= s.ratio
            stageStates.append(StageState(up: up, x: StateBuffer(steps * s.channels), blocks: s.blocks.map { $0.makeState(maxSteps: steps) }))
        }
        return State(first: first.makeState(maxSteps: maxSteps), h: StateBuffer(maxSteps * first.outChannels),
                     stages: stageStates, last: last.makeState(maxSteps: steps))
    }

    func scratchCount(maxSteps: Int) -> Int {
        var steps = maxSteps
        var n = first.scratchCount(maxSteps: steps)
        for s in stages {
            n = max(n, s.up.scratchCount(maxSteps: steps))
            steps *= s.ratio
            for b in s.blocks { n = max(n, b.scratchCount(maxSteps: steps)) }
        }
        return max(n, last.scratchCount(maxSteps: steps))
    }

    /// Where the caller writes the latent rows of the next call.
    func input(_ state: State) -> UnsafeMutablePointer<Float> { first.input(state.first) }

    /// Decodes `steps` latent rows written at `input(state)` into y[steps·hop] samples.
    func step(steps latentSteps: Int, into y: UnsafeMutablePointer<Float>, state: inout State, scratch: UnsafeMutablePointer<Float>,
              profile: MimiProfile? = nil) {
        var steps = latentSteps
        let h = state.h.pointer
        first.step(steps: steps, into: h, state: &state.first, scratch: scratch)
        Activations.eluVectorized(h, into: h, count: steps * first.outChannels)
        profile?.mark(.decoderIn)
        var input = UnsafePointer(h)
        for i in stages.indices {
            let stage = stages[i]
            let x = state.stages[i].x.pointer
            stage.up.step(input, steps: steps, into: x, state: &state.stages[i].up, scratch: scratch)
            profile?.mark(.decoderUp(i))
            steps *= stage.ratio
            for j in stage.blocks.indices {
                stage.blocks[j].step(x, steps: steps, state: &state.stages[i].blocks[j], scratch: scratch)
            }
            profile?.mark(.decoderRes(i))
            if i + 1 < stages.count {
                Activations.eluVectorized(x, into: x, count: steps * stage.channels)
                input = UnsafePointer(x)
            } else {
                Activations.eluVectorized(x, into: last.input(state.last), count: steps * stage.channels)
            }
        }
        last.step(steps: steps, into: y, state: &state.last, scratch: scratch)
        profile?.mark(.decoderOut)
    }
}
