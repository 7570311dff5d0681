import Foundation

/// Float storage that belongs to one stream's state: allocated and zeroed when the state is
/// made, never per frame. A class so that the pointer stays put while layers hand it around.
public final class StateBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    public init(_ count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(1, count))
        pointer.initialize(repeating: 0, count: max(1, count))
    }

    public func zero(_ n: Int? = nil) { pointer.update(repeating: 0, count: min(count, n ?? count)) }

    deinit { pointer.deallocate() }
}

/// Conv weights as a checkpoint holds them: `<prefix>weight`, or (files saved with weight norm)
/// `weight_g` [shape₀, 1, 1] and `weight_v`, folded as w = g · v / ‖v‖ with the norm over every
/// axis but the first — per output channel of a Conv1d, per *input* channel of a
/// ConvTranspose1d, whose first axis is its input.
enum ConvWeights {
    static func load(_ store: WeightStore, _ names: ConvTensorNames, shape: [Int]) -> Tensor {
        guard !store.contains(names.weight), store.contains(names.weightV) else {
            return store.tensor(names.weight, shape: shape)
        }
        var v = store.tensor(names.weightV, shape: shape)
        let g = store.tensor(names.weightG, shape: [shape[0], 1, 1])
        let inner = shape.dropFirst().reduce(1, *)
        for o in 0..<shape[0] {
            var sum: Double = 0
            for i in 0..<inner { sum += Double(v.data[o * inner + i]) * Double(v.data[o * inner + i]) }
            let scale = g.data[o] / Float(sum.squareRoot())
            for i in 0..<inner { v.data[o * inner + i] *= scale }
        }
        return v
    }
}

/// y[rows, n] += bias[n] for every row.
@inline(__always)
func addBias(_ y: UnsafeMutablePointer<Float>, rows: Int, _ bias: UnsafePointer<Float>, count n: Int) {
    for r in 0..<rows {
        let row = y + r * n
        var i = 0
        while i + 16 <= n {
            let v = UnsafeRawPointer(row + i).loadUnaligned(as: SIMD16<Float>.self)
                + UnsafeRawPointer(bias + i).loadUnaligned(as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(row + i).storeBytes(of: v, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n { row[i] += bias[i]; i += 1 }
    }
}

/// y[count] += x[count].
@inline(__always)
func addInPlace(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
    var i = 0
    while i + 16 <= count {
        let v = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD16<Float>.self)
            + UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
        UnsafeMutableRawPointer(y + i).storeBytes(of: v, as: SIMD16<Float>.self)
        i += 16
    }
    while i < count { y[i] += x[i]; i += 1 }
}

/// Kyutai's causal `StreamingConv1d` on time-major rows [T, C].
///
/// The state keeps the last `context` = (K−1)·dilation + 1 − stride input rows; a call appends
/// its rows after them, convolves without padding (T/stride outputs) and keeps the new last
/// `context` rows. The history starts as zeros (causal zero padding) or, with `.replicate`, as
/// copies of the very first input row. A whole input in one call from a fresh state is exactly
/// the reference's non-streaming conv, so offline ≡ streaming.
///
/// Computed as im2col + one sgemm: with time-major rows the receptive field of one output step is
/// K consecutive rows, a contiguous run of K·Cin floats, so the weight is reordered once at load
/// to [Cout, K·Cin] (k-major) to match.
public final class StreamingConv1d: Sendable {
    public enum Padding: Sendable { case constant, replicate }

    public let name: String
    public let inChannels: Int
    public let outChannels: Int
    public let kernel: Int
    public let stride: Int
    public let dilation: Int
    public let padding: Padding
    /// Input rows carried from one call to the next.
    public let context: Int
    /// [Cout, K·Cin]: weight[o, k·Cin + c] = checkpoint[o, c, k].
    let weight: PackedWeights
    let bias: FloatBox?

    /// Loads `<prefix>weight` [Cout, Cin, K] (or its weight-norm pair) and `<prefix>bias` [Cout].
    public convenience init(store: WeightStore, prefix: String, inChannels: Int, outChannels: Int, kernel: Int, stride: Int = 1,
                            dilation: Int = 1, bias hasBias: Bool = true, padding: Padding = .constant) {
        self.init(store: store, names: ConvTensorNames(prefix), inChannels: inChannels, outChannels: outChannels, kernel: kernel,
                  stride: stride, dilation: dilation, bias: hasBias, padding: padding)
    }

    /// Loads `names.weight` [Cout, Cin, K] (or its weight-norm pair) and `names.bias` [Cout].
    public init(store: WeightStore, names: ConvTensorNames, inChannels: Int, outChannels: Int, kernel: Int, stride: Int = 1,
                dilation: Int = 1, bias hasBias: Bool = true, padding: Padding = .constant) {
        precondition(kernel >= 1 && stride >= 1 && dilation >= 1 && (kernel - 1) * dilation + 1 >= stride,
                     "conv \(names.prefix): kernel \(kernel), stride \(stride), dilation \(dilation)")
        name = names.prefix
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.stride = stride
        self.dilation = dilation
        self.padding = padding
        context = (kernel - 1) * dilation + 1 - stride
        let w = ConvWeights.load(store, names, shape: [outChannels, inChannels, kernel])
        var reordered = [Float](repeating: 0, count: w.count)
        for o in 0..<outChannels {
            for c in 0..<inChannels {
                for k in 0..<kernel {
                    reordered[o * kernel * inChannels + k * inChannels + c] = w.data[(o * inChannels + c) * kernel + k]
                }
            }
        }
        weight = PackedWeights(reordered, n: outChannels, k: kernel * inChannels)
        bias = hasBias ? FloatBox(store.tensor(names.bias, shape: [outChannels]).data) : nil
    }

    public struct State: Sendable {
        /// [context + maxSteps, Cin]: the history, then the rows of the next call.
        let window: StateBuffer
        public let maxSteps: Int
        var first = true

        public mutating func reset() {
            window.zero(window.count)
            first = true
        }
    }

    /// A fresh state for calls of at most `maxSteps` input rows.
    public func makeState(maxSteps: Int) -> State {
        State(window: StateBuffer((context + maxSteps) * inChannels), maxSteps: maxSteps)
    }

    /// Where the caller writes the next call's input rows ([steps, Cin], after the history).
    @inline(__always)
    public func input(_ state: State) -> UnsafeMutablePointer<Float> {
        state.window.pointer + context * inChannels
    }

    private var needsIm2col: Bool { !(kernel == 1 && stride == 1) }

    /// Scratch floats `step` needs for calls of up to `maxSteps` rows.
    public func scratchCount(maxSteps: Int) -> Int {
        needsIm2col ? (maxSteps / stride) * kernel * inChannels : 0
    }

    /// Convolves the `steps` rows written at `input(state)` into y[steps/stride, Cout] (added to
    /// y's contents with `accumulate`: a residual connection for free), then advances the history.
    /// `steps` must be a multiple of the stride and at most the state's `maxSteps`.
    public func step(steps: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool = false,
                     state: inout State, scratch: UnsafeMutablePointer<Float>) {
        precondition(steps % stride == 0 && steps <= state.maxSteps, "\(name): \(steps) steps (stride \(stride), max \(state.maxSteps))")
        guard steps > 0 else { return }
        let cin = inChannels
        let window = state.window.pointer
        let x = window + context * cin
        if padding == .replicate && state.first {
            for r in 0..<context { (window + r * cin).update(from: x, count: cin) }
        }
        state.first = false
        let outSteps = steps / stride
        let rowLength = kernel * cin
        let a: UnsafePointer<Float>
        if needsIm2col {
            for t in 0..<outSteps {
                let source = window + t * stride * cin
                let row = scratch + t * rowLength
                if dilation == 1 {
                    row.update(from: source, count: rowLength)
                } else {
                    for k in 0..<kernel { (row + k * cin).update(from: source + k * dilation * cin, count: cin) }
                }
            }
            a = UnsafePointer(scratch)
        } else {
            a = UnsafePointer(x)
        }
        weight.apply(a, rows: outSteps, into: y, accumulate: accumulate)
        if let bias { addBias(y, rows: outSteps, bias.pointer, count: outChannels) }
        if context > 0 { memmove(window, window + steps * cin, context * cin * MemoryLayout<Float>.stride) }
    }

    /// The truth `step` is tested against: PyTorch's Conv1d over a whole time-major input
    /// x[T, Cin] with `weight` [Cout, Cin, K] as the checkpoint stores it, after a causal left
    /// padding of `context` rows (zeros, or the first row with `.replicate`). Returns [T/stride, Cout].
    public static func reference(_ x: [Float], steps: Int, weight: Tensor, bias: [Float]?, stride: Int, dilation: Int = 1,
                                 padding: Padding = .constant) -> [Float] {
        let (cout, cin, kernel) = (weight.shape[0], weight.shape[1], weight.shape[2])
        let context = (kernel - 1) * dilation + 1 - stride
        func input(_ t: Int, _ c: Int) -> Double {
            if t >= 0 { return Double(x[t * cin + c]) }
            return padding == .replicate ? Double(x[c]) : 0
        }
        let outSteps = steps / stride
        var y = [Float](repeating: 0, count: outSteps * cout)
        for t in 0..<outSteps {
            for o in 0..<cout {
                var sum = Double(bias?[o] ?? 0)
                for c in 0..<cin {
                    for k in 0..<kernel {
                        sum += Double(weight.data[(o * cin + c) * kernel + k]) * input(t * stride - context + k * dilation, c)
                    }
                }
                y[t * cout + o] = Float(sum)
            }
        }
        return y
    }
}

/// Kyutai's causal `StreamingConvTranspose1d` on time-major rows, all trimming on the right.
///
/// A full transposed conv of T rows gives T·S + (K−S) rows. The state keeps the last K−S of them
/// (`partial`, without bias) and adds them onto the first K−S of the next call's output; a call
/// emits exactly T·S final rows. Offline (one call, zero partial) is the reference's
/// non-streaming conv with the last K−S rows cut.
///
/// Full convolution: one product Z[T, K·Cout] = X[T, Cin] · Wᵀ (weight reordered once to
/// [K·Cout, Cin], k-major) and an overlap-add of Z's K row slices. `depthwise` (groups =
/// channels, Mimi's upsampler) is a direct loop.
public final class StreamingConvTranspose1d: Sendable {
    public let name: String
    public let inChannels: Int
    public let outChannels: Int
    public let kernel: Int
    public let stride: Int
    public let depthwise: Bool
    /// Output rows carried from one call to the next.
    public let trim: Int
    /// groups = 1: [K·Cout, Cin] with weight[k·Cout + o, c] = checkpoint[c, o, k].
    let weight: PackedWeights?
    /// depthwise: [C, K] as stored.
    let depthwiseWeight: FloatBox?
    let bias: FloatBox?

    /// Loads `<prefix>weight` ([Cin, Cout, K], or [C, 1, K] when depthwise) and `<prefix>bias` [Cout].
    public convenience init(store: WeightStore, prefix: String, inChannels: Int, outChannels: Int, kernel: Int, stride: Int,
                            depthwise: Bool = false, bias hasBias: Bool = true) {
        self.init(store: store, names: ConvTensorNames(prefix), inChannels: inChannels, outChannels: outChannels, kernel: kernel,
                  stride: stride, depthwise: depthwise, bias: hasBias)
    }

    public init(store: WeightStore, names: ConvTensorNames, inChannels: Int, outChannels: Int, kernel: Int, stride: Int,
                depthwise: Bool = false, bias hasBias: Bool = true) {
        let prefix = names.prefix
        precondition(kernel >= stride && stride >= 1, "conv transpose \(prefix): kernel \(kernel) < stride \(stride)")
        precondition(!depthwise || inChannels == outChannels, "depthwise conv transpose \(prefix) needs Cin = Cout")
        name = prefix
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.stride = stride
        self.depthwise = depthwise
        trim = kernel - stride
        if depthwise {
            depthwiseWeight = FloatBox(ConvWeights.load(store, names, shape: [inChannels, 1, kernel]).data)
            weight = nil
        } else {
            let w = ConvWeights.load(store, names, shape: [inChannels, outChannels, kernel])
            var reordered = [Float](repeating: 0, count: w.count)
            for c in 0..<inChannels {
                for o in 0..<outChannels {
                    for k in 0..<kernel {
                        reordered[(k * outChannels + o) * inChannels + c] = w.data[(c * outChannels + o) * kernel + k]
                    }
                }
            }
            weight = PackedWeights(reordered, n: kernel * outChannels, k: inChannels)
            depthwiseWeight = nil
        }
        bias = hasBias ? FloatBox(store.tensor(names.bias, shape: [outChannels]).data) : nil
    }

    public struct State: Sendable {
        /// [trim, Cout]: overlap of the last call's output onto the next one's, without bias.
        let partial: StateBuffer
        public let maxSteps: Int

        public mutating func reset() { partial.zero() }
    }

    public func makeState(maxSteps: Int) -> State {
        State(partial: StateBuffer(trim * outChannels), maxSteps: maxSteps)
    }

    public func scratchCount(maxSteps: Int) -> Int {
        (maxSteps * stride + trim) * outChannels + (depthwise ? 0 : maxSteps * kernel * outChannels)
    }

    /// x[steps, Cin] → y[steps·stride, Cout], advancing the overlap carried in the state.
    public func step(_ x: UnsafePointer<Float>, steps: Int, into y: UnsafeMutablePointer<Float>, state: inout State,
                     scratch: UnsafeMutablePointer<Float>) {
        precondition(steps <= state.maxSteps, "\(name): \(steps) steps (max \(state.maxSteps))")
        guard steps > 0 else { return }
        let cout = outChannels
        let emitted = steps * stride
        let acc = scratch  // [emitted + trim, Cout]
        acc.update(from: state.partial.pointer, count: trim * cout)
        (acc + trim * cout).update(repeating: 0, count: emitted * cout)
        if let depthwiseWeight {
            let w = depthwiseWeight.pointer
            for t in 0..<steps {
                for k in 0..<kernel {
                    let row = acc + (t * stride + k) * cout
                    let xr = x + t * cout
                    for c in 0..<cout { row[c] += w[c * kernel + k] * xr[c] }
                }
            }
        } else if let weight {
            let z = scratch + (emitted + trim) * cout  // [steps, K·Cout]
            weight.apply(x, rows: steps, into: z)
            for t in 0..<steps {
                for k in 0..<kernel {
                    addInPlace(acc + (t * stride + k) * cout, z + (t * kernel + k) * cout, count: cout)
                }
            }
        }
        state.partial.pointer.update(from: acc + emitted * cout, count: trim * cout)
        y.update(from: acc, count: emitted * cout)
        if let bias { addBias(y, rows: emitted, bias.pointer, count: cout) }
    }

    /// The truth `step` is tested against: PyTorch's ConvTranspose1d over a whole time-major input
    /// x[T, Cin] with `weight` as stored ([Cin, Cout/groups, K]; groups = 1 or Cin), last K−S rows
    /// cut. Returns [T·stride, Cout].
    public static func reference(_ x: [Float], steps: Int, weight: Tensor, bias: [Float]?, stride: Int, groups: Int = 1) -> [Float] {
        let (cin, perGroupOut, kernel) = (weight.shape[0], weight.shape[1], weight.shape[2])
        let cout = perGroupOut * groups
        let inPerGroup = cin / groups
        let full = steps * stride + kernel - stride
        var y = [Double](repeating: 0, count: full * cout)
        for t in 0..<steps {
            for c in 0..<cin {
                let g = c / inPerGroup
                for j in 0..<perGroupOut {
                    let o = g * perGroupOut + j
                    for k in 0..<kernel {
                        y[(t * stride + k) * cout + o] += Double(weight.data[(c * perGroupOut + j) * kernel + k]) * Double(x[t * cin + c])
                    }
                }
            }
        }
        var out = [Float](repeating: 0, count: steps * stride * cout)
        for r in 0..<(steps * stride) { for o in 0..<cout { out[r * cout + o] = Float(y[r * cout + o] + Double(bias?[o] ?? 0)) } }
        return out
    }
}
