import Foundation

/// The nearest centroid of a codebook. Screening uses argmin(½‖c‖² − x·c), one matrix×vector
/// for all centroids; but when ‖x‖ is large against the distances (Mimi's residuals have norms
/// near 80 while neighbouring centroids differ by 1e-3 in squared distance), both terms are in
/// the thousands and float32 rounding (~1e-3) decides. So every centroid whose screened value is
/// within a rounding margin of the best is re-ranked by its exact squared distance in float64
/// (usually one to three of them): the result is the true nearest centroid, lowest index on an
/// exact tie, as the reference's argmin of distances intends.
public enum NearestCentroid {
    /// Relative margin (of the terms' magnitude) within which screened candidates are re-ranked:
    /// ≈ 100× the rounding of a 256-term float32 dot product.
    static let margin: Float = 2e-5

    /// `scores[b]` must hold x·c_b for every centroid (c [bins, dim]), `halfNorms[b]` ½‖c_b‖².
    @inline(__always)
    public static func search(_ x: UnsafePointer<Float>, centroids c: UnsafePointer<Float>, halfNorms: UnsafePointer<Float>,
                              scores: UnsafePointer<Float>, bins: Int, dim: Int, maxHalfNorm: Float) -> Int {
        var bestValue = Float.infinity
        for b in 0..<bins { bestValue = min(bestValue, halfNorms[b] - scores[b]) }
        var halfX: Float = 0
        for i in 0..<dim { halfX += x[i] * x[i] }
        halfX *= 0.5
        let threshold = bestValue + margin * (halfX + maxHalfNorm) + Float.leastNormalMagnitude
        var best = 0
        var bestDistance = Double.infinity
        for b in 0..<bins where halfNorms[b] - scores[b] <= threshold {
            let row = c + b * dim
            var d: Double = 0
            for i in 0..<dim {
                let e = Double(x[i]) - Double(row[i])
                d += e * e
            }
            if d < bestDistance { bestDistance = d; best = b }
        }
        return best
    }

    /// The truth `search` is tested against: argmin of exact squared distances, first on ties.
    public static func reference(_ x: [Float], centroids c: [Float], bins: Int, dim: Int) -> Int {
        var best = 0
        var bestDistance = Double.infinity
        for b in 0..<bins {
            var d: Double = 0
            for i in 0..<dim { let e = Double(x[i]) - Double(c[b * dim + i]); d += e * e }
            if d < bestDistance { bestDistance = d; best = b }
        }
        return best
    }

    /// ½‖c_b‖² for each row, rounded once from float64.
    public static func halfNorms(_ c: [Float], bins: Int, dim: Int) -> [Float] {
        (0..<bins).map { b in
            var n: Double = 0
            for i in 0..<dim { n += Double(c[b * dim + i]) * Double(c[b * dim + i]) }
            return Float(0.5 * n)
        }
    }
}

/// One codebook (`EuclideanCodebook`): centroids = embedding_sum / max(cluster_usage, ε),
/// computed once at load, with ½‖c‖² beside them for `NearestCentroid`.
struct EuclideanCodebook: Sendable {
    static let epsilon: Float = 1e-5
    let bins: Int
    let dim: Int
    /// [bins, dim]
    let centroids: FloatBox
    /// [bins]
    let halfNorms: FloatBox
    let maxHalfNorm: Float

    init(store: WeightStore, names: MimiTensorNames.Codebook, bins: Int, dim: Int) {
        self.bins = bins
        self.dim = dim
        let sum = store.tensor(names.embeddingSum, shape: [bins, dim])
        let usage = store.tensor(names.clusterUsage, shape: [bins])
        store.ignore(names.initialized)
        var c = sum.data
        for b in 0..<bins {
            let u = max(usage.data[b], EuclideanCodebook.epsilon)
            for i in 0..<dim { c[b * dim + i] = sum.data[b * dim + i] / u }
        }
        let norms = NearestCentroid.halfNorms(c, bins: bins, dim: dim)
        centroids = FloatBox(c, hugePages: true)
        halfNorms = FloatBox(norms)
        maxHalfNorm = norms.max() ?? 0
    }
}

/// A residual vector quantizer with forced projections (`ResidualVectorQuantizer`):
/// input_proj (1×1 conv D → d, no bias), then per level the nearest centroid of the residual,
/// which is subtracted before the next level; decoding sums the chosen centroids and applies
/// output_proj (d → D).
final class ResidualVectorQuantizer: Sendable {
    let dim: Int
    let bins: Int
    /// [d, D]
    let inputProj: WeightMatrix
    /// [D, d]
    let outputProj: WeightMatrix
    /// The first `materialized` levels (the ones this model will use).
    let codebooks: [EuclideanCodebook]

    /// Checks every level of the checkpoint, keeps the first `materialized`.
    init(store: WeightStore, names: MimiTensorNames.Quantizer, materialized: Int, dimension: Int, codebookDim: Int, bins: Int) {
        dim = codebookDim
        self.bins = bins
        inputProj = store.matrix(names.inputProj, shape: [codebookDim, dimension, 1])
        outputProj = store.matrix(names.outputProj, shape: [dimension, codebookDim, 1])
        var books: [EuclideanCodebook] = []
        for (l, book) in names.codebooks.enumerated() {
            if l < materialized {
                books.append(EuclideanCodebook(store: store, names: book, bins: bins, dim: codebookDim))
            } else {
                // Validated (name, shape, dtype) without widening a copy nobody will use.
                _ = store.matrix(book.embeddingSum, shape: [bins, codebookDim])
                _ = store.matrix(book.clusterUsage, shape: [bins])
                store.ignore(book.initialized)
            }
        }
        codebooks = books
    }

    func scratchCount(maxFrames: Int) -> Int { maxFrames * (dim + bins) }

    /// Codes of `levels` levels for x[frames, D], written at codes[f·codeStride + l].
    func encode(_ x: UnsafePointer<Float>, frames: Int, levels: Int, codes: UnsafeMutablePointer<Int32>, codeStride: Int,
                scratch: UnsafeMutablePointer<Float>) {
        let residual = scratch  // [frames, d]
        let scores = scratch + frames * dim  // [frames, bins]
        inputProj.apply(rows: x, steps: frames, into: residual)
        for l in 0..<levels {
            let book = codebooks[l]
            let c = book.centroids.pointer
            Kernels.matmulWeightStream(residual, c, scores, m: frames, n: bins, k: dim)
            for f in 0..<frames {
                let r = residual + f * dim
                let best = NearestCentroid.search(r, centroids: c, halfNorms: book.halfNorms.pointer, scores: scores + f * bins,
                                                  bins: bins, dim: dim, maxHalfNorm: book.maxHalfNorm)
                codes[f * codeStride + l] = Int32(best)
                let chosen = c + best * dim
                for i in 0..<dim { r[i] -= chosen[i] }
            }
        }
    }

    /// y[frames, D] (+)= output_proj(Σ_l centroid_l[codes[f·codeStride + l]]). Codes must be valid.
    func decode(_ codes: UnsafePointer<Int32>, frames: Int, levels: Int, codeStride: Int, into y: UnsafeMutablePointer<Float>,
                accumulate: Bool, scratch: UnsafeMutablePointer<Float>) {
        let q = scratch  // [frames, d]
        q.update(repeating: 0, count: frames * dim)
        for f in 0..<frames {
            let row = q + f * dim
            for l in 0..<levels {
                addInPlace(row, codebooks[l].centroids.pointer + Int(codes[f * codeStride + l]) * dim, count: dim)
            }
        }
        outputProj.apply(rows: q, steps: frames, into: y, accumulate: accumulate)
    }
}

/// Mimi's split RVQ (`SplitResidualVectorQuantizer`): `rvq_first` (the semantic codebook) and
/// `rvq_rest` (acoustic) both quantize the *same* latent, each through its own projection; codes
/// are [semantic…, acoustic…] and the decoded latent is the sum of both parts.
public final class SplitResidualVectorQuantizer: Sendable {
    public let semanticLevels: Int
    public let totalLevels: Int
    /// Levels this model can encode and decode (the configuration's active codebooks).
    public let usableLevels: Int
    public let bins: Int
    let first: ResidualVectorQuantizer
    let rest: ResidualVectorQuantizer

    init(store: WeightStore, names: MimiTensorNames, config c: MimiConfig) {
        semanticLevels = c.semanticCodebooks
        totalLevels = c.totalCodebooks
        usableLevels = c.numCodebooks
        bins = c.bins
        first = ResidualVectorQuantizer(store: store, names: names.rvqFirst,
                                        materialized: min(c.numCodebooks, c.semanticCodebooks), dimension: c.dimension,
                                        codebookDim: c.codebookDimension, bins: c.bins)
        rest = ResidualVectorQuantizer(store: store, names: names.rvqRest,
                                       materialized: max(0, c.numCodebooks - c.semanticCodebooks), dimension: c.dimension,
                                       codebookDim: c.codebookDimension, bins: c.bins)
    }

    func scratchCount(maxFrames: Int) -> Int {
        max(first.scratchCount(maxFrames: maxFrames), rest.scratchCount(maxFrames: maxFrames))
    }

    /// latent[frames, D] → codes[frames, codebooks] (frame-major).
    func encode(_ latent: UnsafePointer<Float>, frames: Int, codebooks: Int, codes: UnsafeMutablePointer<Int32>,
                scratch: UnsafeMutablePointer<Float>) {
        let semantic = min(codebooks, semanticLevels)
        first.encode(latent, frames: frames, levels: semantic, codes: codes, codeStride: codebooks, scratch: scratch)
        if codebooks > semantic {
            rest.encode(latent, frames: frames, levels: codebooks - semantic, codes: codes + semantic, codeStride: codebooks,
                        scratch: scratch)
        }
    }

    /// codes[frames, codebooks] (valid, frame-major) → latent[frames, D].
    func decode(_ codes: UnsafePointer<Int32>, frames: Int, codebooks: Int, into latent: UnsafeMutablePointer<Float>,
                scratch: UnsafeMutablePointer<Float>) {
        let semantic = min(codebooks, semanticLevels)
        first.decode(codes, frames: frames, levels: semantic, codeStride: codebooks, into: latent, accumulate: false, scratch: scratch)
        if codebooks > semantic {
            rest.decode(codes + semantic, frames: frames, levels: codebooks - semantic, codeStride: codebooks, into: latent,
                        accumulate: true, scratch: scratch)
        }
    }
}
