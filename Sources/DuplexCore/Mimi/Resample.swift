import Foundation

/// 25 Hz → 12.5 Hz (`ConvDownsample1d`, learnt): a strided conv dimension → dimension with
/// kernel 2·stride, no bias and *replicate* padding — the history starts as copies of the very
/// first latent row rather than zeros. `downsample.conv.conv.conv.weight` [D, D, 2·stride].
public final class ConvDownsample1d: Sendable {
    let conv: StreamingConv1d

    init(store: WeightStore, names: ConvTensorNames, dimension: Int, stride: Int) {
        conv = StreamingConv1d(store: store, names: names, inChannels: dimension, outChannels: dimension,
                               kernel: 2 * stride, stride: stride, bias: false, padding: .replicate)
    }
}

/// 12.5 Hz → 25 Hz (`ConvTrUpsample1d`, learnt): a transposed conv with kernel 2·stride, no bias,
/// and groups = channels — each channel upsampled on its own, because the released model keeps
/// Kyutai's `upsample_channel_wise_bug=True`. `upsample.convtr.convtr.convtr.weight` [D, 1, 2·stride].
public final class ConvTrUpsample1d: Sendable {
    let convtr: StreamingConvTranspose1d

    init(store: WeightStore, names: ConvTensorNames, dimension: Int, stride: Int) {
        convtr = StreamingConvTranspose1d(store: store, names: names, inChannels: dimension,
                                          outChannels: dimension, kernel: 2 * stride, stride: stride, depthwise: true, bias: false)
    }
}
