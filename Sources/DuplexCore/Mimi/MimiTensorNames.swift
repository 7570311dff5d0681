import Foundation

/// Where every Mimi tensor lives in Kyutai's checkpoint, for one config: the one place that maps
/// Mimi's blocks to names (the initialisers take their names from here) and builds the tensor
/// table the loader checks a file against (`table(_:)`).
///
/// The SEANet's `model.<i>` indices count every module of Kyutai's `nn.Sequential`, ELUs
/// included: encoder conv, (res blocks, ELU, down conv) per ratio, ELU, conv; the decoder mirrors it.
public struct MimiTensorNames: Sendable {
    public struct ResBlock: Sendable {
        /// `block.1`: D → D/compress, residual kernel, dilated.
        public let conv1: ConvTensorNames
        /// `block.3`: → D, kernel 1.
        public let conv2: ConvTensorNames
        init(_ prefix: String) {
            conv1 = ConvTensorNames(prefix + "block.1.conv.conv.")
            conv2 = ConvTensorNames(prefix + "block.3.conv.conv.")
        }
    }

    public struct EncoderStage: Sendable {
        public let blocks: [ResBlock]
        public let down: ConvTensorNames
    }

    public struct DecoderStage: Sendable {
        public let up: ConvTensorNames
        public let blocks: [ResBlock]
    }

    public struct Codebook: Sendable {
        public let embeddingSum: String
        public let clusterUsage: String
        /// A buffer Kyutai's loader does not read; files may lack it.
        public let initialized: String
        init(_ prefix: String) {
            embeddingSum = prefix + "embedding_sum"
            clusterUsage = prefix + "cluster_usage"
            initialized = prefix + "_initialized"
        }
    }

    public struct Quantizer: Sendable {
        public let inputProj: String
        public let outputProj: String
        public let codebooks: [Codebook]
        init(_ prefix: String, levels: Int) {
            inputProj = prefix + "input_proj.weight"
            outputProj = prefix + "output_proj.weight"
            codebooks = (0..<levels).map { Codebook(prefix + "vq.layers.\($0)._codebook.") }
        }
    }

    public let encoderFirst: ConvTensorNames
    public let encoderStages: [EncoderStage]
    public let encoderLast: ConvTensorNames
    public let encoderTransformer = TransformerTensorNames("encoder_transformer.transformer.")
    public let downsample = ConvTensorNames("downsample.conv.conv.conv.")
    /// `rvq_first` (semantic) and `rvq_rest` (acoustic).
    public let rvqFirst: Quantizer
    public let rvqRest: Quantizer
    public let upsample = ConvTensorNames("upsample.convtr.convtr.convtr.")
    public let decoderTransformer = TransformerTensorNames("decoder_transformer.transformer.")
    public let decoderFirst: ConvTensorNames
    public let decoderStages: [DecoderStage]
    public let decoderLast: ConvTensorNames

    public init(config c: MimiConfig) {
        let e = "encoder.model."
        var index = 0
        func conv(_ p: String, _ suffix: String = ".conv.conv.") -> ConvTensorNames {
            defer { index += 1 }
            return ConvTensorNames(p + "\(index)" + suffix)
        }
        func blocks(_ p: String) -> [ResBlock] {
            (0..<c.residualLayers).map { _ in
                defer { index += 1 }
                return ResBlock(p + "\(index).")
            }
        }
        encoderFirst = conv(e)
        encoderStages = c.ratios.reversed().map { _ in
            let b = blocks(e)
            index += 1  // ELU
            return EncoderStage(blocks: b, down: conv(e))
        }
        index += 1  // ELU
        encoderLast = conv(e)

        let d = "decoder.model."
        index = 0
        decoderFirst = conv(d)
        decoderStages = c.ratios.map { _ in
            index += 1  // ELU
            let up = conv(d, ".convtr.convtr.")
            return DecoderStage(up: up, blocks: blocks(d))
        }
        index += 1  // ELU
        decoderLast = conv(d)

        rvqFirst = Quantizer("quantizer.rvq_first.", levels: c.semanticCodebooks)
        rvqRest = Quantizer("quantizer.rvq_rest.", levels: c.totalCodebooks - c.semanticCodebooks)
    }

    /// Dilation of residual block `j` of a stage.
    static func dilation(_ c: MimiConfig, block j: Int) -> Int { Int(pow(Double(c.dilationBase), Double(j))) }

    /// Every tensor of a Mimi checkpoint for `config`, in load order. The active codebook count
    /// does not change it: a file holds all `totalCodebooks` levels.
    public static func table(_ c: MimiConfig) -> TensorTable {
        let n = MimiTensorNames(config: c)
        var s: [TensorSpec] = []
        func res(_ b: ResBlock, dim: Int, role: String) {
            let hidden = dim / c.compress
            s += b.conv1.specs(shape: [hidden, dim, c.residualKernelSize], bias: hidden, role: role + " conv 1 (\(dim)→\(hidden))")
            s += b.conv2.specs(shape: [dim, hidden, 1], bias: dim, role: role + " conv 2 (\(hidden)→\(dim))")
        }
        var ch = c.filters
        s += n.encoderFirst.specs(shape: [ch, 1, c.kernelSize], bias: ch, role: "SEANet encoder input conv")
        for (i, (stage, ratio)) in zip(n.encoderStages, c.ratios.reversed()).enumerated() {
            for (j, b) in stage.blocks.enumerated() { res(b, dim: ch, role: "SEANet encoder stage \(i) residual block \(j)") }
            s += stage.down.specs(shape: [2 * ch, ch, 2 * ratio], bias: 2 * ch, role: "SEANet encoder stage \(i) downsampling conv (stride \(ratio))")
            ch *= 2
        }
        s += n.encoderLast.specs(shape: [c.dimension, ch, c.lastKernelSize], bias: c.dimension, role: "SEANet encoder output conv")
        s += n.encoderTransformer.specs(c.transformerConfig, role: "encoder transformer")
        let k = 2 * c.resampleStride
        s += n.downsample.specs(shape: [c.dimension, c.dimension, k], bias: nil, role: "25→12.5 Hz downsampling conv")
        for (q, levels, what) in [(n.rvqFirst, c.semanticCodebooks, "semantic"), (n.rvqRest, c.totalCodebooks - c.semanticCodebooks, "acoustic")] {
            s.append(TensorSpec(q.inputProj, [c.codebookDimension, c.dimension, 1], .matrix, role: "\(what) RVQ input projection"))
            s.append(TensorSpec(q.outputProj, [c.dimension, c.codebookDimension, 1], .matrix, role: "\(what) RVQ output projection"))
            for (l, book) in q.codebooks.prefix(levels).enumerated() {
                s.append(TensorSpec(book.initialized, [1], .buffer, role: "\(what) codebook \(l) initialised flag (unused)",
                                    dtype: .any, required: false))
                s.append(TensorSpec(book.clusterUsage, [c.bins], .codebookUsage, role: "\(what) codebook \(l) cluster usage"))
                s.append(TensorSpec(book.embeddingSum, [c.bins, c.codebookDimension], .codebookSum,
                                    role: "\(what) codebook \(l) embedding sum (centroids × usage)"))
            }
        }
        s += n.upsample.specs(shape: [c.dimension, 1, k], transposed: true, bias: nil, role: "12.5→25 Hz depthwise upsampling conv")
        s += n.decoderTransformer.specs(c.transformerConfig, role: "decoder transformer")
        ch = c.filters << c.ratios.count
        s += n.decoderFirst.specs(shape: [ch, c.dimension, c.kernelSize], bias: ch, role: "SEANet decoder input conv")
        for (i, (stage, ratio)) in zip(n.decoderStages, c.ratios).enumerated() {
            s += stage.up.specs(shape: [ch, ch / 2, 2 * ratio], transposed: true, bias: ch / 2,
                                role: "SEANet decoder stage \(i) upsampling transposed conv (stride \(ratio))")
            ch /= 2
            for (j, b) in stage.blocks.enumerated() { res(b, dim: ch, role: "SEANet decoder stage \(i) residual block \(j)") }
        }
        s += n.decoderLast.specs(shape: [1, ch, c.lastKernelSize], bias: 1, role: "SEANet decoder output conv")
        return TensorTable(model: "Mimi", specs: s)
    }
}
