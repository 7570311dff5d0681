import Foundation

/// ITU-R BS.1770-4 integrated loudness, computed exactly as pyloudnorm 0.1.1 computes it
/// (`pyln.Meter(rate).integrated_loudness`), and loudness normalisation as
/// `pyln.normalize.loudness`. NVIDIA's PersonaPlex brings every voice prompt to −24 LUFS this way
/// before encoding it, so duplex must follow pyloudnorm's arithmetic (its filter design, block
/// count and block bounds), not only the standard's intent: where the two differ, this follows
/// pyloudnorm. Everything runs in Double, as pyloudnorm does on a float64 array.
/// (tools/reference/fixtures_loudness.py; within 1e-6 LU of it.)
public enum Loudness {
    /// Integrated loudness of a mono signal in LUFS; −∞ when the signal is silent (no block passes
    /// the gates) or shorter than one 400 ms block (where pyloudnorm raises).
    public static func integrated(_ samples: [Float], sampleRate: Int) -> Double {
        integrated(channels: [samples], sampleRate: sampleRate)
    }

    /// Integrated loudness of up to five channels, `[channel][sample]`, in BS.1770's order
    /// (L, R, C, Ls, Rs). Same result conventions as the mono form.
    public static func integrated(channels: [[Float]], sampleRate: Int) -> Double {
        precondition(sampleRate > 0, "Loudness: sample rate \(sampleRate) Hz")
        precondition((1...channelWeights.count).contains(channels.count),
                     "Loudness: \(channels.count) channels; BS.1770 (and pyloudnorm) weigh 1 to \(channelWeights.count)")
        let count = channels[0].count
        precondition(channels.allSatisfy { $0.count == count }, "Loudness: channels of different lengths")
        guard !isShorterThanOneBlock(count, sampleRate: sampleRate) else { return -.infinity }

        let filter = KWeighting(sampleRate: sampleRate)
        let powers = channels.map { meanSquares(ofBlocks: filter.apply($0), sampleRate: sampleRate) }
        let blocks = powers[0].count
        // Σ_i G_i·z_ij: the weighted power of block j over channels (BS.1770 eq. 4's argument).
        let weighted = (0..<blocks).map { j in
            var sum = 0.0
            for i in powers.indices { sum += channelWeights[i] * powers[i][j] }
            return sum
        }
        let blockLoudness = weighted.map(loudness(ofPower:))

        // Absolute gate: blocks at or above −70 LUFS (pyloudnorm's `>=`).
        let aboveAbsolute = (0..<blocks).filter { blockLoudness[$0] >= absoluteGateLUFS }
        guard !aboveAbsolute.isEmpty else { return -.infinity }
        // Relative gate: 10 LU below the loudness of the blocks that passed the absolute gate,
        // from each channel's mean power over them (eq. 6).
        let relativeGate = loudness(ofPower: weightedMeanPower(powers, over: aboveAbsolute)) + relativeGateLU
        // Blocks above both (pyloudnorm's strict `>` on both here), then eq. 7.
        let gated = (0..<blocks).filter { blockLoudness[$0] > relativeGate && blockLoudness[$0] > absoluteGateLUFS }
        // pyloudnorm turns the empty mean's NaN into 0, whose loudness is −∞.
        guard !gated.isEmpty else { return -.infinity }
        return loudness(ofPower: weightedMeanPower(powers, over: gated))
    }

    /// `samples` scaled by one gain so that their integrated loudness becomes `targetLUFS`
    /// (pyloudnorm's `normalize.loudness`: gain = 10^((target − measured)/20), no limiting, so a
    /// loud target may push samples past ±1 as it does there). Throws `LoudnessError` where
    /// pyloudnorm would raise or return ±∞/NaN: input shorter than one block, silent input,
    /// non-finite samples or target, or a gain that overflows Float.
    public static func normalized(_ samples: [Float], sampleRate: Int, targetLUFS: Double) throws -> [Float] {
        guard targetLUFS.isFinite else {
            throw LoudnessError(.notFinite, "target loudness \(targetLUFS) LUFS is not a finite number")
        }
        if isShorterThanOneBlock(samples.count, sampleRate: sampleRate) {
            let needed = Int((blockSeconds * Double(sampleRate)).rounded(.up))
            throw LoudnessError(.tooShort, "\(samples.count) samples at \(sampleRate) Hz "
                + "(\(String(format: "%.1f", 1000 * Double(samples.count) / Double(sampleRate))) ms) are shorter than "
                + "one 400 ms loudness block (\(needed) samples): their loudness cannot be measured")
        }
        guard let peak = peakMagnitude(samples) else {
            throw LoudnessError(.notFinite, "the audio holds NaN or infinite samples: its loudness cannot be measured")
        }
        let measured = integrated(samples, sampleRate: sampleRate)
        guard measured.isFinite else {
            throw LoudnessError(.silent, "the audio is silent (no 400 ms block reaches \(Int(absoluteGateLUFS)) LUFS): "
                + "no gain brings it to \(targetLUFS) LUFS")
        }
        let gain = pow(10.0, (targetLUFS - measured) / 20.0)
        guard gain.isFinite, Double(peak) * gain <= Double(Float.greatestFiniteMagnitude) else {
            throw LoudnessError(.notFinite, "bringing \(measured) LUFS to \(targetLUFS) LUFS takes a gain of \(gain), "
                + "which overflows 32-bit samples")
        }
        return samples.map { Float(gain * Double($0)) }
    }

    // MARK: - BS.1770-4's constants, as pyloudnorm's meter.py spells them

    /// Gating block length T_g: 400 ms (BS.1770-4 §2.3; pyloudnorm's default `block_size`).
    static let blockSeconds = 0.400
    /// Consecutive blocks overlap by 75 %, so a block starts every 100 ms (`overlap = 0.75`,
    /// `step = 1.0 − overlap`: computed the same way so the doubles agree).
    static let blockStep = 1.0 - 0.75
    /// Γ_a: blocks quieter than −70 LUFS are silence and never count.
    static let absoluteGateLUFS = -70.0
    /// Γ_r is 10 LU below the loudness of the blocks that pass Γ_a.
    static let relativeGateLU = -10.0
    /// L = −0.691 + 10·log10(power): −0.691 dB cancels the K-weighting filter's gain at 1 kHz,
    /// so a full-scale 1 kHz sine reads −3.01 LUFS.
    static let loudnessOffset = -0.691
    /// G_i: surround channels (Ls, Rs) weigh 1.41 (≈ +1.5 dB), the front ones 1.
    static let channelWeights = [1.0, 1.0, 1.0, 1.41, 1.41]

    /// pyloudnorm's `util.valid_audio` refuses `samples < block_size * rate` (a float compare).
    static func isShorterThanOneBlock(_ count: Int, sampleRate: Int) -> Bool {
        Double(count) < blockSeconds * Double(sampleRate)
    }

    /// −0.691 + 10·log10(p); −∞ for a power of 0, NaN for NaN, as numpy gives.
    static func loudness(ofPower power: Double) -> Double {
        loudnessOffset + 10.0 * log10(power)
    }

    /// Σ_i G_i · mean_{j∈blocks} z_ij (eqs. 6 and 7).
    static func weightedMeanPower(_ powers: [[Double]], over blocks: [Int]) -> Double {
        var sum = 0.0
        for i in powers.indices {
            var channelSum = 0.0
            for j in blocks { channelSum += powers[i][j] }
            sum += channelWeights[i] * (channelSum / Double(blocks.count))
        }
        return sum
    }

    /// Mean square of each gating block of one K-weighted channel (BS.1770 eq. 1), with
    /// pyloudnorm's block count and bounds:
    ///     numBlocks = int(np.round((T − T_g) / (T_g · step))) + 1,  T = samples / rate
    ///     l = int(T_g · (j · step) · rate),  u = int(T_g · (j · step + 1) · rate)
    /// Rounding half to even on a double that may sit just below the half (0.75 s gives 3.4999…
    /// steps, so 4 blocks, not 5), truncating bounds, and a last block that may reach past the end
    /// (numpy's slice stops at the end) while still dividing by the full block length.
    static func meanSquares(ofBlocks x: [Double], sampleRate: Int) -> [Double] {
        let rate = Double(sampleRate)
        let seconds = Double(x.count) / rate
        let blockCount = Int(((seconds - blockSeconds) / (blockSeconds * blockStep)).rounded(.toNearestOrEven)) + 1
        guard blockCount > 0 else { return [] }
        let scale = 1.0 / (blockSeconds * rate)
        return (0..<blockCount).map { j in
            let lower = Int(blockSeconds * (Double(j) * blockStep) * rate)
            let upper = min(Int(blockSeconds * (Double(j) * blockStep + 1) * rate), x.count)
            var sum = 0.0
            if lower < upper { for k in lower..<upper { sum += x[k] * x[k] } }
            return scale * sum
        }
    }

    /// The largest |sample|, or nil if any is NaN or infinite.
    static func peakMagnitude(_ samples: [Float]) -> Float? {
        var peak: Float = 0
        for s in samples {
            guard s.isFinite else { return nil }
            peak = max(peak, abs(s))
        }
        return peak
    }
}

/// Why a signal cannot be brought to a loudness, in words a user can act on.
public struct LoudnessError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Shorter than one 400 ms gating block: nothing to measure.
        case tooShort
        /// Every block is below the absolute gate: the loudness is −∞.
        case silent
        /// NaN or infinite samples, a non-finite target, or a gain that overflows Float.
        case notFinite
    }

    public let kind: Kind
    public let message: String
    public var description: String { "loudness normalisation: \(message)" }

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
}

/// BS.1770's K-weighting: a high shelf (the head's acoustic effect) then a high pass (the
/// revised low-frequency B-curve), each a biquad designed from pyloudnorm's RBJ "Audio EQ
/// Cookbook" formulas for the actual sample rate (its `IIRfilter`), not the standard's
/// 48 kHz coefficient table, and applied as scipy.signal.lfilter does.
struct KWeighting {
    /// One biquad normalised by a0: y[n] = b0·x[n] + b1·x[n−1] + b2·x[n−2] − a1·y[n−1] − a2·y[n−2].
    struct Biquad {
        var b0, b1, b2, a1, a2: Double

        /// Direct form II transposed, in scipy's `_linear_filter` order of operations, from rest
        /// (pyloudnorm passes no initial state).
        func apply(_ x: [Double]) -> [Double] {
            var z0 = 0.0, z1 = 0.0
            return x.map { xn in
                let yn = z0 + b0 * xn
                z0 = z1 + xn * b1 - yn * a1
                z1 = xn * b2 - yn * a2
                return yn
            }
        }
    }

    let highShelf: Biquad
    let highPass: Biquad

    init(sampleRate: Int) {
        // Shelf: +4 dB above about 1.5 kHz, Q 1/√2: the boost a rigid sphere (the head) gives
        // high frequencies. These round parameters in the RBJ design are pyloudnorm's; they come
        // close to, not exactly onto, BS.1770's 48 kHz table (which Brecht De Man's bilinear design
        // reproduces with +3.9998 dB, 1681.97 Hz, Q 0.7072 — pyloudnorm's 'DeMan' class).
        highShelf = Self.highShelf(gainDB: 4.0, q: 1 / 2.0.squareRoot(), fc: 1500.0, rate: Double(sampleRate))
        // High pass at 38 Hz, Q 0.5: BS.1770's revised low-frequency B curve, which discounts
        // the bass the ear hears less of (the table's: 38.14 Hz, Q 0.5003).
        highPass = Self.highPass(q: 0.5, fc: 38.0, rate: Double(sampleRate))
    }

    /// pyloudnorm filters with the shelf first, then the high pass (its dict order).
    func apply(_ samples: [Float]) -> [Double] {
        highPass.apply(highShelf.apply(samples.map(Double.init)))
    }

    /// RBJ high shelf: A = 10^(G/40), w0 = 2π·fc/rate, α = sin(w0)/(2Q).
    static func highShelf(gainDB: Double, q: Double, fc: Double, rate: Double) -> Biquad {
        let a = pow(10.0, gainDB / 40.0)
        let w0 = 2.0 * Double.pi * (fc / rate)
        let alpha = sin(w0) / (2.0 * q)
        let cosW0 = cos(w0), sqrtA = a.squareRoot()
        let b0 = a * ((a + 1) + (a - 1) * cosW0 + 2 * sqrtA * alpha)
        let b1 = -2 * a * ((a - 1) + (a + 1) * cosW0)
        let b2 = a * ((a + 1) + (a - 1) * cosW0 - 2 * sqrtA * alpha)
        let a0 = (a + 1) - (a - 1) * cosW0 + 2 * sqrtA * alpha
        let a1 = 2 * ((a - 1) - (a + 1) * cosW0)
        let a2 = (a + 1) - (a - 1) * cosW0 - 2 * sqrtA * alpha
        return Biquad(b0: b0 / a0, b1: b1 / a0, b2: b2 / a0, a1: a1 / a0, a2: a2 / a0)
    }

    /// RBJ high pass: w0 = 2π·fc/rate, α = sin(w0)/(2Q).
    static func highPass(q: Double, fc: Double, rate: Double) -> Biquad {
        let w0 = 2.0 * Double.pi * (fc / rate)
        let alpha = sin(w0) / (2.0 * q)
        let cosW0 = cos(w0)
        let b0 = (1 + cosW0) / 2
        let b1 = -(1 + cosW0)
        let b2 = (1 + cosW0) / 2
        let a0 = 1 + alpha
        let a1 = -2 * cosW0
        let a2 = 1 - alpha
        return Biquad(b0: b0 / a0, b1: b1 / a0, b2: b2 / a0, a1: a1 / a0, a2: a2 / a0)
    }
}
