/// The streaming contract (design.md §3.2, Kyutai's `StreamingModule`): an immutable module and
/// a per-stream `State` it makes; `step` consumes one call's input, advances the state and
/// returns what came out (possibly nothing: `Void`, or `false` from `LMGen`). The offline path is
/// the same code run over a whole input from a fresh state. A new stream is a fresh state
/// (`reset(_:)`); states also offer an allocation-free `reset()` for the hot path.
///
/// Each stream keeps one position counter: the write position of its KV rings
/// (`KVCache.end`), from which attention offsets, per-step weight selection, RoPE positions,
/// `StreamingTransformer.State.position`, `LMModel.State.steps`, `LMGen.State.offset` and Mimi's
/// frame counts are derived. Convs have no position: their state is their history.
///
/// Steps take pointers into preallocated memory; the small `Input` structs wrapping them cost
/// nothing and a step allocates nothing.
public protocol StreamingModule: Sendable {
    associatedtype State
    associatedtype Input
    associatedtype Output
    /// A fresh stream (allocates all of its memory, once).
    func makeState() -> State
    /// One call of the stream.
    func step(_ input: Input, state: inout State) throws -> Output
}

extension StreamingModule {
    /// A new stream: the state replaced by a fresh one.
    public func reset(_ state: inout State) { state = makeState() }
}

/// `steps` time-major rows [steps, dim] at `rows`, updated in place (transformers).
public struct StreamRows {
    public let rows: UnsafeMutablePointer<Float>
    public let steps: Int
    public init(_ rows: UnsafeMutablePointer<Float>, steps: Int) {
        self.rows = rows
        self.steps = steps
    }
}

/// `steps` input rows at `input` → rows at `output`.
public struct StreamCall {
    public let input: UnsafePointer<Float>
    public let steps: Int
    public let output: UnsafeMutablePointer<Float>
    public init(_ input: UnsafePointer<Float>, steps: Int, output: UnsafeMutablePointer<Float>) {
        self.input = input
        self.steps = steps
        self.output = output
    }
}

extension StreamingAttention: StreamingModule {
    public func makeState() -> State { makeState(maxSteps: 1) }
    public func step(_ call: StreamCall, state: inout State) {
        step(call.input, steps: call.steps, output: call.output, state: &state)
    }
}

extension TransformerLayer: StreamingModule {
    public func makeState() -> State { makeState(maxSteps: 1) }
    public func step(_ x: StreamRows, state: inout State) { step(x.rows, steps: x.steps, state: &state) }
}

extension StreamingTransformer: StreamingModule {
    public func makeState() -> State { makeState(maxSteps: 1) }
    public func step(_ x: StreamRows, state: inout State) { step(x.rows, steps: x.steps, state: &state) }
}

extension StreamingConv1d: StreamingModule {
    /// One call: the `steps` rows written at `input(state)` → `steps / stride` rows at `output`.
    public struct Call {
        public let steps: Int
        public let output: UnsafeMutablePointer<Float>
        public let scratch: UnsafeMutablePointer<Float>
        public let accumulate: Bool
        public init(steps: Int, output: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
            self.steps = steps
            self.output = output
            self.scratch = scratch
            self.accumulate = accumulate
        }
    }

    /// A stream of one output step per call.
    public func makeState() -> State { makeState(maxSteps: stride) }
    public func step(_ call: Call, state: inout State) {
        step(steps: call.steps, into: call.output, accumulate: call.accumulate, state: &state, scratch: call.scratch)
    }
}

extension StreamingConvTranspose1d: StreamingModule {
    public struct Call {
        public let rows: StreamCall
        public let scratch: UnsafeMutablePointer<Float>
        public init(_ rows: StreamCall, scratch: UnsafeMutablePointer<Float>) {
            self.rows = rows
            self.scratch = scratch
        }
    }

    public func makeState() -> State { makeState(maxSteps: 1) }
    public func step(_ call: Call, state: inout State) {
        step(call.rows.input, steps: call.rows.steps, into: call.rows.output, state: &state, scratch: call.scratch)
    }
}

extension Mimi: StreamingModule {
    /// One call of a Mimi stream: a frame of audio to encode, or a frame of codes to decode (one
    /// state holds both directions, as a conversation uses them).
    public enum Call {
        /// 1920 samples → `numCodebooks` codes.
        case encode(UnsafePointer<Float>, codes: UnsafeMutablePointer<Int32>)
        /// `codebooks` codes → 1920 samples.
        case decode(UnsafePointer<Int32>, codebooks: Int, output: UnsafeMutablePointer<Float>)
    }

    public func makeState() -> State { makeState(maxFrames: 1) }
    public func step(_ call: Call, state: inout State) throws {
        switch call {
        case let .encode(frame, codes): encodeStep(frame, codes: codes, state: state)
        case let .decode(codes, codebooks, output): try decodeStep(codes, codebooks: codebooks, output: output, state: state)
        }
    }
}

extension LMModel: StreamingModule {
    /// A stream with the default (bf16) KV rings; `reset(_:)` gives one too, while the state's
    /// own `reset()` keeps whatever its rings store.
    public func makeState() -> State { makeState(kvCache: .bf16) }
    /// One temporal step: text + every audio token (already delayed) → `state.hidden`, `state.textLogits`.
    public func step(_ tokens: UnsafeBufferPointer<Int32>, state: inout State) throws { try temporalStep(tokens, state: &state) }
}

extension LMGen: StreamingModule {
    /// A conversation with the default (bf16) KV rings (see `LMModel`'s).
    public func makeState() -> State { makeState(kvCache: .bf16) }
    /// One 80 ms step (`step(userCodes:state:)`): true when a frame came out into `state.output`.
    public func step(_ userCodes: UnsafeBufferPointer<Int32>, state: inout State) throws -> Bool {
        try step(userCodes: userCodes, state: &state)
    }
}
