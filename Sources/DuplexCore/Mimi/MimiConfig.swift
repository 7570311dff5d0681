import Foundation

/// Everything that shapes a Mimi codec. The default is the released model
/// (`tokenizer-e351c8d8-checkpoint125.safetensors`, Kyutai's `loaders._mimi_config`); tests use a
/// shrunk configuration of the same structure.
public struct MimiConfig: Sendable, Equatable {
    public var sampleRate = 24_000
    /// Codes per second (12.5 Hz → 1920-sample frames).
    public var frameRate = 12.5

    // SEANet (`_seanet_kwargs`).
    /// Latent channels between the SEANet and the quantizer (also the transformers' width).
    public var dimension = 512
    public var filters = 64
    public var residualLayers = 1
    /// Decoder order; the encoder uses them reversed.
    public var ratios = [8, 6, 5, 4]
    public var kernelSize = 7
    public var residualKernelSize = 3
    public var lastKernelSize = 3
    public var dilationBase = 2
    public var compress = 2

    // Encoder/decoder transformers (`_transformer_kwargs`).
    public var transformerHeads = 8
    public var transformerLayers = 8
    public var transformerFeedforward = 2048
    /// Attention window in 25 Hz steps.
    public var transformerContext = 250
    public var ropeMaxPeriod: Float = 10_000
    public var layerNormEps: Float = 1e-5

    // Split residual vector quantizer (`_quantizer_kwargs`).
    public var codebookDimension = 256
    public var totalCodebooks = 32
    public var semanticCodebooks = 1
    public var bins = 2048
    /// Codebooks produced by `encode` (Moshi uses 8). Decoding accepts 1…this many.
    public var numCodebooks = 8

    public init() {}

    /// The released Mimi, with `numCodebooks` active codebooks.
    public static func released(codebooks: Int = 8) -> MimiConfig {
        var c = MimiConfig()
        c.numCodebooks = codebooks
        return c
    }

    /// SEANet hop: samples per 25 Hz latent step (960).
    public var hopLength: Int { ratios.reduce(1, *) }
    /// Samples per code frame (1920).
    public var frameSize: Int { Int((Double(sampleRate) / frameRate).rounded()) }
    /// Latent steps per code frame: the stride of the down/upsampling convs (2).
    public var resampleStride: Int { frameSize / max(1, hopLength) }

    public var transformerConfig: TransformerConfig {
        TransformerConfig(dim: dimension, numHeads: transformerHeads, numLayers: transformerLayers,
                          feedForward: .gelu(hidden: transformerFeedforward), norm: .layerNorm(eps: layerNormEps),
                          layerScale: true, context: transformerContext, ropeMaxPeriod: ropeMaxPeriod)
    }

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let message: String
        public var description: String { "invalid Mimi configuration: \(message)" }
    }

    /// Throws on a configuration the implementation cannot run (each reason named).
    public func validate() throws {
        func check(_ ok: Bool, _ message: @autoclosure () -> String) throws {
            if !ok { throw Invalid(message: message()) }
        }
        try check(sampleRate > 0 && frameRate > 0, "sample rate \(sampleRate) and frame rate \(frameRate) must be positive")
        try check(!ratios.isEmpty && ratios.allSatisfy { $0 > 0 }, "ratios \(ratios) must be positive")
        try check(Double(frameSize) * frameRate == Double(sampleRate), "frame rate \(frameRate) does not divide \(sampleRate) Hz")
        try check(frameSize % hopLength == 0 && resampleStride >= 1,
                  "frame size \(frameSize) is not a multiple of the SEANet hop \(hopLength)")
        try check(filters > 0 && dimension > 0 && compress > 0 && filters % compress == 0,
                  "filters \(filters) must be a positive multiple of compress \(compress)")
        try check(transformerHeads > 0 && dimension % transformerHeads == 0 && (dimension / transformerHeads) % 2 == 0,
                  "dimension \(dimension) must split into \(transformerHeads) heads of even size")
        try check(transformerContext > 0, "transformer context must be positive")
        try check(transformerLayers >= 1, "transformer layers must be at least 1, got \(transformerLayers)")
        try check(semanticCodebooks >= 1 && totalCodebooks > semanticCodebooks,
                  "need 1 ≤ semantic codebooks (\(semanticCodebooks)) < total codebooks (\(totalCodebooks))")
        try check(numCodebooks >= 1 && numCodebooks <= totalCodebooks,
                  "active codebooks \(numCodebooks) must be in 1…\(totalCodebooks)")
        try check(bins >= 1 && bins <= Int(Int32.max) && codebookDimension >= 1, "bins \(bins) and codebook dimension must be positive")
    }
}

extension MimiConfig {
    /// Reads Kyutai's config dictionary (`loaders._mimi_config` as JSON, keys `seanet`,
    /// `transformer`, `quantizer`, `sample_rate`, `frame_rate`), as the fixtures store it.
    /// Keys it does not know keep their released values; settings this implementation does not
    /// support (non-causal, other norms or activations) are refused by name.
    public init(kyutaiJSON text: String, codebooks: Int = 8) throws {
        guard let data = text.data(using: .utf8),
              let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw Invalid(message: "config is not a JSON object")
        }
        self.init()
        numCodebooks = codebooks
        func int(_ d: [String: Any], _ k: String, _ into: inout Int) { if let v = d[k] as? NSNumber { into = v.intValue } }
        func float(_ d: [String: Any], _ k: String, _ into: inout Float) { if let v = d[k] as? NSNumber { into = v.floatValue } }
        func require(_ d: [String: Any], _ k: String, _ expected: String) throws {
            if let v = d[k], (v as? String) != expected { throw Invalid(message: "\(k) = \(v) is not supported (only \(expected))") }
        }
        func require(_ d: [String: Any], _ k: String, _ expected: Bool) throws {
            guard let v = d[k] else { return }
            if ((v as? Bool) ?? (v as? NSNumber)?.boolValue) != expected {
                throw Invalid(message: "\(k) = \(v) is not supported (only \(expected))")
            }
        }
        int(root, "sample_rate", &sampleRate)
        if let v = root["frame_rate"] as? NSNumber { frameRate = v.doubleValue }
        if let v = root["channels"] as? NSNumber, v.intValue != 1 { throw Invalid(message: "only mono Mimi is supported, got channels = \(v)") }
        if let s = root["seanet"] as? [String: Any] {
            int(s, "dimension", &dimension)
            int(s, "n_filters", &filters)
            int(s, "n_residual_layers", &residualLayers)
            if let r = s["ratios"] as? [NSNumber] { ratios = r.map(\.intValue) }
            int(s, "kernel_size", &kernelSize)
            int(s, "residual_kernel_size", &residualKernelSize)
            int(s, "last_kernel_size", &lastKernelSize)
            int(s, "dilation_base", &dilationBase)
            int(s, "compress", &compress)
            try require(s, "causal", true)
            try require(s, "activation", "ELU")
            try require(s, "pad_mode", "constant")
            try require(s, "true_skip", true)
            try require(s, "norm", "none")
            if let c = s["channels"] as? NSNumber, c.intValue != 1 { throw Invalid(message: "only mono SEANet is supported, got channels = \(c)") }
                    }
        if let t = root["transformer"] as? [String: Any] {
            if let d = t["d_model"] as? NSNumber, d.intValue != dimension {
                throw Invalid(message: "transformer d_model \(d) ≠ SEANet dimension \(dimension) (projections are not supported)")
            }
            int(t, "num_heads", &transformerHeads)
            int(t, "num_layers", &transformerLayers)
            int(t, "dim_feedforward", &transformerFeedforward)
            int(t, "context", &transformerContext)
            float(t, "max_period", &ropeMaxPeriod)
            try require(t, "norm", "layer_norm")
            try require(t, "gating", "none")
            try require(t, "positional_embedding", "rope")
            try require(t, "causal", true)
        }
        if let q = root["quantizer"] as? [String: Any] {
            int(q, "dimension", &codebookDimension)
            int(q, "n_q", &totalCodebooks)
            int(q, "bins", &bins)
            int(q, "n_q_semantic", &semanticCodebooks)
        }
        try validate()
    }
}
