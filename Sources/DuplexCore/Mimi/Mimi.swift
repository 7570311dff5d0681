import Foundation

/// What can go wrong feeding Mimi, each with the message a user can act on.
public enum MimiError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A code outside 0..<bins, at an absolute frame index of the stream (or file).
    case codeOutOfRange(frame: Int, codebook: Int, value: Int32, bins: Int)
    /// A number of codebooks this model cannot decode.
    case codebookCount(given: Int, usable: Int)

    public var description: String {
        switch self {
        case let .codeOutOfRange(frame, codebook, value, bins):
            "code \(value) at frame \(frame), codebook \(codebook) is out of range (codes are 0…\(bins - 1))"
        case let .codebookCount(given, usable):
            "\(given) codebooks given, this Mimi decodes 1…\(usable) (load it with more codebooks)"
        }
    }
}

/// Codes of a whole file: [codebooks, frames] row-major, as the `.npy` files hold them.
public struct MimiCodes: Sendable, Equatable {
    public var codebooks: Int
    public var frames: Int
    public var values: [Int32]

    public init(codebooks: Int, frames: Int, values: [Int32]) {
        precondition(values.count == codebooks * frames, "codes: \(values.count) values for [\(codebooks), \(frames)]")
        self.codebooks = codebooks
        self.frames = frames
        self.values = values
    }

    public subscript(codebook: Int, frame: Int) -> Int32 { values[codebook * frames + frame] }
}

/// Kyutai's Mimi codec: 24 kHz mono ⇄ 12.5 Hz frames of codes. Immutable weights (share one
/// across streams); everything a conversation changes lives in a `State`.
///
/// Encode: SEANet encoder → encoder transformer (25 Hz) → downsample (12.5 Hz) → split RVQ.
/// Decode: split RVQ → upsample (25 Hz) → decoder transformer → SEANet decoder.
///
/// Streaming and offline are one code path: a call of F frames runs the convs over all F at
/// once and the transformers one frame (two 25 Hz steps) at a time, which is exactly Kyutai's
/// streaming mode fed one frame per call — so results do not depend on how audio is chunked.
/// (Kyutai's own offline call attends over the full 250-step window for every step; its
/// streaming ring cache, like this one, holds 250 steps including the current frame's two, so
/// the two differ slightly once a stream is longer than 10 s.)
public final class Mimi: Sendable {
    public let config: MimiConfig
    let encoder: SEANetEncoder
    let encoderTransformer: StreamingTransformer
    let downsample: ConvDownsample1d
    public let quantizer: SplitResidualVectorQuantizer
    let upsample: ConvTrUpsample1d
    let decoderTransformer: StreamingTransformer
    let decoder: SEANetDecoder

    /// Builds Mimi from `store` by the checkpoint's own tensor names (`MimiTensorNames`): the
    /// store checks its file against `MimiTensorNames.table(config)` first. Call `store.finish()`
    /// afterwards to fail on anything missing, misshaped or unexpected (`load` does).
    public init(store: WeightStore, config: MimiConfig = .released()) throws {
        try config.validate()
        self.config = config
        let names = MimiTensorNames(config: config)
        store.expect(MimiTensorNames.table(config))
        encoder = SEANetEncoder(store: store, names: names, config: config)
        encoderTransformer = StreamingTransformer(store: store, names: names.encoderTransformer, config: config.transformerConfig)
        downsample = ConvDownsample1d(store: store, names: names.downsample, dimension: config.dimension, stride: config.resampleStride)
        quantizer = SplitResidualVectorQuantizer(store: store, names: names, config: config)
        upsample = ConvTrUpsample1d(store: store, names: names.upsample, dimension: config.dimension, stride: config.resampleStride)
        decoderTransformer = StreamingTransformer(store: store, names: names.decoderTransformer, config: config.transformerConfig)
        decoder = SEANetDecoder(store: store, names: names, config: config)
    }

    /// Opens a Mimi checkpoint strictly. The configuration is `config`, else the one a file made
    /// by duplex's tools records in its metadata (`config`, Kyutai's dictionary as JSON), else
    /// the released model's; `codebooks` active codebooks.
    public static func load(path: String, codebooks: Int = 8, config: MimiConfig? = nil) throws -> Mimi {
        let file = try SafetensorsFile(path: path)
        if let foreign = ForeignLayout.detect(names: file.entries.keys) {
            throw SafetensorsError(path: path, .unexpectedTensor, "is \(foreign.description)")
        }
        var c: MimiConfig
        if let config {
            c = config
        } else if let json = file.metadata["config"] {
            c = try MimiConfig(kyutaiJSON: json, codebooks: codebooks)
        } else {
            c = .released(codebooks: codebooks)
        }
        c.numCodebooks = codebooks
        let store = try WeightStore(files: [file])
        store.residentCopies = true
        let mimi = try Mimi(store: store, config: c)
        try store.finish()
        return mimi
    }

    public var frameSize: Int { config.frameSize }
    public var numCodebooks: Int { config.numCodebooks }
    public var bins: Int { config.bins }

    // MARK: state

    /// Everything one stream changes: every conv's history, both transformers' KV caches,
    /// the transposed convs' overlaps, and the scratch the hot path works in — all allocated
    /// here, once. A reference type (it owns raw buffers); give each stream its own.
    public final class State: @unchecked Sendable {
        public let maxFrames: Int
        var encoder: SEANetEncoder.State
        /// The encoder transformer's layers (KV rings readable, e.g. to check a stream wrapped them).
        public internal(set) var encoderTransformer: StreamingTransformer.State
        var downsample: StreamingConv1d.State
        /// [maxFrames, D]: the last encode call's latent (before quantization).
        let latent: StateBuffer
        /// [maxFrames, D]: the last decode call's quantized latent.
        let quantized: StateBuffer
        var upsample: StreamingConvTranspose1d.State
        public internal(set) var decoderTransformer: StreamingTransformer.State
        var decoder: SEANetDecoder.State
        let scratch: StateBuffer
        let quantizerScratch: StateBuffer
        let dimension: Int
        /// 25 Hz transformer steps per frame.
        let stride: Int
        /// Frames encoded / decoded since the last reset, as the encoder's and the decoder's
        /// transformers count their steps (one position per stream, nowhere else).
        public var encodedFrames: Int { encoderTransformer.position / stride }
        public var decodedFrames: Int { decoderTransformer.position / stride }
        /// Non-finite input samples replaced (NaN → 0, ±Inf → ±1) since the last reset.
        public internal(set) var sanitizedSamples = 0
        /// Per-block timing, when attached (`MimiProfile(stages: mimi.config.ratios.count)`).
        public var profile: MimiProfile?

        init(mimi m: Mimi, maxFrames: Int) {
            self.maxFrames = maxFrames
            let c = m.config
            let steps = maxFrames * c.resampleStride
            dimension = c.dimension
            stride = c.resampleStride
            encoder = m.encoder.makeState(maxSamples: maxFrames * c.frameSize)
            encoderTransformer = m.encoderTransformer.makeState(maxSteps: c.resampleStride)
            downsample = m.downsample.conv.makeState(maxSteps: steps)
            latent = StateBuffer(maxFrames * c.dimension)
            quantized = StateBuffer(maxFrames * c.dimension)
            upsample = m.upsample.convtr.makeState(maxSteps: maxFrames)
            decoderTransformer = m.decoderTransformer.makeState(maxSteps: c.resampleStride)
            decoder = m.decoder.makeState(maxSteps: steps)
            scratch = StateBuffer(max(m.encoder.scratchCount(maxSamples: maxFrames * c.frameSize),
                                      m.downsample.conv.scratchCount(maxSteps: steps),
                                      m.upsample.convtr.scratchCount(maxSteps: maxFrames),
                                      m.decoder.scratchCount(maxSteps: steps)))
            quantizerScratch = StateBuffer(m.quantizer.scratchCount(maxFrames: maxFrames))
        }

        /// A fresh conversation: both transformers, every conv, the counters.
        public func reset() {
            encoder.reset()
            encoderTransformer.reset()
            downsample.reset()
            upsample.reset()
            decoderTransformer.reset()
            decoder.reset()
            sanitizedSamples = 0
        }

        /// The last encode call's latent, [frames, D] (diagnostics, parity tests).
        public func lastLatent(frames: Int) -> [Float] { Array(UnsafeBufferPointer(start: latent.pointer, count: frames * dimension)) }

        /// The last decode call's quantized latent, [frames, D].
        public func lastQuantized(frames: Int) -> [Float] {
            Array(UnsafeBufferPointer(start: quantized.pointer, count: frames * dimension))
        }
    }

    /// A fresh stream state for calls of up to `maxFrames` frames (streaming: 1).
    public func makeState(maxFrames: Int = 1) -> State { State(mimi: self, maxFrames: max(1, maxFrames)) }

    // MARK: streaming

    /// One 1920-sample frame → `numCodebooks` codes.
    public func encodeStep(_ frame: UnsafePointer<Float>, codes: UnsafeMutablePointer<Int32>, state: State) {
        encode(frame, frames: 1, codes: codes, state: state)
    }

    /// `frames` whole frames of samples → codes [frames, numCodebooks] (frame-major).
    /// Non-finite samples are replaced (NaN → 0, ±Inf → ±1) and counted in the state, so one
    /// bad sample cannot poison the stream's history.
    public func encode(_ samples: UnsafePointer<Float>, frames: Int, codes: UnsafeMutablePointer<Int32>, state: State) {
        precondition(frames >= 0 && frames <= state.maxFrames, "encode of \(frames) frames on a state made for \(state.maxFrames)")
        guard frames > 0 else { return }
        let c = config
        let count = frames * c.frameSize
        let input = encoder.input(state.encoder)
        var replaced = 0
        for i in 0..<count {
            let v = samples[i]
            if v.isFinite {
                input[i] = v
            } else {
                input[i] = v.isNaN ? 0 : (v > 0 ? 1 : -1)
                replaced += 1
            }
        }
        state.sanitizedSamples += replaced
        let scratch = state.scratch.pointer
        let d = c.dimension
        let stride = c.resampleStride
        let profile = state.profile
        profile?.start()
        let latent25 = downsample.conv.input(state.downsample)
        encoder.step(samples: count, into: latent25, state: &state.encoder, scratch: scratch, profile: profile)
        for f in 0..<frames {
            encoderTransformer.step(latent25 + f * stride * d, steps: stride, state: &state.encoderTransformer)
        }
        profile?.mark(.encoderTransformer)
        downsample.conv.step(steps: frames * stride, into: state.latent.pointer, state: &state.downsample, scratch: scratch)
        profile?.mark(.downsample)
        quantizer.encode(state.latent.pointer, frames: frames, codebooks: c.numCodebooks, codes: codes,
                         scratch: state.quantizerScratch.pointer)
        profile?.mark(.quantizerEncode)
    }

    /// One frame of `codebooks` codes → 1920 samples.
    public func decodeStep(_ codes: UnsafePointer<Int32>, codebooks: Int, output: UnsafeMutablePointer<Float>, state: State) throws {
        try decode(codes, codebooks: codebooks, frames: 1, output: output, state: state)
    }

    /// codes [frames, codebooks] (frame-major) → frames·1920 samples. Every code is checked first:
    /// a bad one throws (naming its frame and codebook) and leaves the state untouched.
    public func decode(_ codes: UnsafePointer<Int32>, codebooks: Int, frames: Int, output: UnsafeMutablePointer<Float>,
                       state: State) throws {
        precondition(frames >= 0 && frames <= state.maxFrames, "decode of \(frames) frames on a state made for \(state.maxFrames)")
        guard codebooks >= 1 && codebooks <= quantizer.usableLevels else {
            throw MimiError.codebookCount(given: codebooks, usable: quantizer.usableLevels)
        }
        for f in 0..<frames {
            for k in 0..<codebooks {
                let v = codes[f * codebooks + k]
                if v < 0 || Int(v) >= config.bins {
                    throw MimiError.codeOutOfRange(frame: state.decodedFrames + f, codebook: k, value: v, bins: config.bins)
                }
            }
        }
        guard frames > 0 else { return }
        let c = config
        let scratch = state.scratch.pointer
        let d = c.dimension
        let stride = c.resampleStride
        let profile = state.profile
        profile?.start()
        quantizer.decode(codes, frames: frames, codebooks: codebooks, into: state.quantized.pointer,
                         scratch: state.quantizerScratch.pointer)
        profile?.mark(.quantizerDecode)
        let latent25 = decoder.input(state.decoder)
        upsample.convtr.step(state.quantized.pointer, steps: frames, into: latent25, state: &state.upsample, scratch: scratch)
        profile?.mark(.upsample)
        for f in 0..<frames {
            decoderTransformer.step(latent25 + f * stride * d, steps: stride, state: &state.decoderTransformer)
        }
        profile?.mark(.decoderTransformer)
        decoder.step(steps: frames * stride, into: output, state: &state.decoder, scratch: scratch, profile: profile)
    }

    // MARK: offline

    /// Frames an offline call processes at once (bounds the scratch; results do not depend on it).
    public static let offlineChunkFrames = 4

    /// A whole recording → codes [numCodebooks, frames]. The input is zero-padded on the right
    /// to a whole number of frames (as Kyutai's offline encode does); empty input gives 0 frames.
    public func encode(_ audio: [Float]) -> MimiCodes {
        encodeWithLatent(audio).codes
    }

    /// `encode`, also returning the unquantized latent [frames, dimension] (parity checks).
    public func encodeWithLatent(_ audio: [Float]) -> (codes: MimiCodes, latent: Tensor) {
        let k = config.numCodebooks
        let d = config.dimension
        let frames = (audio.count + frameSize - 1) / frameSize
        guard frames > 0 else { return (MimiCodes(codebooks: k, frames: 0, values: []), Tensor(zeros: [0, d])) }
        var latent = [Float](repeating: 0, count: frames * d)
        var padded = audio
        padded.append(contentsOf: repeatElement(0, count: frames * frameSize - audio.count))
        let state = makeState(maxFrames: min(frames, Mimi.offlineChunkFrames))
        var frameMajor = [Int32](repeating: 0, count: frames * k)
        padded.withUnsafeBufferPointer { x in
            frameMajor.withUnsafeMutableBufferPointer { out in
                var f = 0
                while f < frames {
                    let n = min(state.maxFrames, frames - f)
                    encode(x.baseAddress! + f * frameSize, frames: n, codes: out.baseAddress! + f * k, state: state)
                    latent.withUnsafeMutableBufferPointer { $0.baseAddress!.advanced(by: f * d).update(from: state.latent.pointer, count: n * d) }
                    f += n
                }
            }
        }
        var values = [Int32](repeating: 0, count: frames * k)
        for f in 0..<frames { for j in 0..<k { values[j * frames + f] = frameMajor[f * k + j] } }
        return (MimiCodes(codebooks: k, frames: frames, values: values), Tensor(shape: [frames, d], data: latent))
    }

    /// Codes [codebooks, frames] → frames·1920 samples (the caller trims any padding).
    public func decode(_ codes: MimiCodes) throws -> [Float] {
        let k = codes.codebooks
        guard k >= 1 && k <= quantizer.usableLevels else {
            throw MimiError.codebookCount(given: k, usable: quantizer.usableLevels)
        }
        guard codes.frames > 0 else { return [] }
        var frameMajor = [Int32](repeating: 0, count: codes.values.count)
        for f in 0..<codes.frames { for j in 0..<k { frameMajor[f * k + j] = codes.values[j * codes.frames + f] } }
        let state = makeState(maxFrames: min(codes.frames, Mimi.offlineChunkFrames))
        var audio = [Float](repeating: 0, count: codes.frames * frameSize)
        try frameMajor.withUnsafeBufferPointer { c in
            try audio.withUnsafeMutableBufferPointer { out in
                var f = 0
                while f < codes.frames {
                    let n = min(state.maxFrames, codes.frames - f)
                    try decode(c.baseAddress! + f * k, codebooks: k, frames: n, output: out.baseAddress! + f * frameSize, state: state)
                    f += n
                }
            }
        }
        return audio
    }
}

/// Collects audio that arrives in chunks of any size and hands out whole frames, in order:
/// the buffer in front of `Mimi.encodeStep`. Preallocated; a push never allocates, and a chunk
/// that starts on a frame boundary is handed out in place, without a copy.
public struct MimiFrameBuffer: Sendable {
    public let frameSize: Int
    private var pending: [Float]
    /// Samples waiting for the rest of their frame.
    public private(set) var count = 0

    public init(frameSize: Int = 1920) {
        precondition(frameSize > 0)
        self.frameSize = frameSize
        pending = [Float](repeating: 0, count: frameSize)
    }

    /// Appends `samples`, calling `body` with each frame they complete.
    public mutating func push(_ samples: UnsafeBufferPointer<Float>, _ body: (UnsafePointer<Float>) throws -> Void) rethrows {
        guard var source = samples.baseAddress else { return }
        var remaining = samples.count
        let size = frameSize
        while remaining > 0 {
            if count == 0 && remaining >= size {
                try body(source)
                source += size
                remaining -= size
                continue
            }
            let take = min(size - count, remaining)
            let start = count
            pending.withUnsafeMutableBufferPointer { p in (p.baseAddress! + start).update(from: source, count: take) }
            count += take
            source += take
            remaining -= take
            if count == size {
                count = 0
                try pending.withUnsafeBufferPointer { try body($0.baseAddress!) }
            }
        }
    }

    /// End of stream: the pending partial frame, zero-padded to a whole one, goes to `body`.
    /// Returns how many padding samples were added (0 if nothing was pending).
    @discardableResult
    public mutating func flush(_ body: (UnsafePointer<Float>) throws -> Void) rethrows -> Int {
        guard count > 0 else { return 0 }
        let padding = frameSize - count
        let start = count
        pending.withUnsafeMutableBufferPointer { p in (p.baseAddress! + start).update(repeating: 0, count: padding) }
        count = 0
        try pending.withUnsafeBufferPointer { try body($0.baseAddress!) }
        return padding
    }

    /// Drops any pending samples (a new conversation).
    public mutating func reset() { count = 0 }
}
