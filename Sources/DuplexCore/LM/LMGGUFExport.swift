import Foundation

/// Writes a Moshi LM as a GGUF in candle's layout (`duplex quantize`): the file Kyutai's Rust
/// code and duplex both read. Every matrix and embedding gets the recipe's ggml type, everything
/// else (norm gains) F32, as candle's `tensor-tools quantize` stores them; the depformer's
/// stacked projections are written per step and its shared norms once per step, as
/// `LMTensorNames.candleLayout` reads them. Tensors are read, quantized and written one at a time,
/// so a 7B checkpoint is converted in a few GB of memory. The config goes into the metadata
/// (`LMConfig.ggufConfigKey`), so a folder holding only this file knows its model.
public enum LMGGUFExport {
    public struct Summary: Sendable {
        public var tensors = 0
        public var bytes = 0
        /// Tensors per stored type ("Q4_K": 96, "F32": 65, …).
        public var types: [String: Int] = [:]
    }

    public static func write(store: WeightStore, config: LMConfig, recipe: QuantizeRecipe, to path: String,
                             progress: ((Int, Int) -> Void)? = nil) throws -> Summary {
        let table = LMTensorNames.table(config)
        store.expect(table, layout: LMTensorNames.layout(ofNames: store.names, config: config))
        let layout = LMTensorNames.candleLayout(config)
        // What goes into the file, in table order: (entry, part index, part count, name, type).
        struct Item { let spec: TensorSpec; let part: Int; let parts: Int; let stacked: Bool; let name: String; let type: GGUFTensorType; let shape: [Int] }
        var items: [Item] = []
        for spec in table.specs {
            let quant = recipe.type(for: spec, table: table)
            let type = quant.flatMap { GGUFTensorType(rawValue: $0.ggufTypeID!) } ?? .f32
            switch layout.source(spec) {
            case .one(let n):
                items.append(Item(spec: spec, part: 0, parts: 1, stacked: false, name: n, type: type, shape: spec.shape))
            case .stacked(let ns):
                var shape = spec.shape
                shape[0] /= ns.count
                for (k, n) in ns.enumerated() { items.append(Item(spec: spec, part: k, parts: ns.count, stacked: true, name: n, type: type, shape: shape)) }
            case .shared(let ns):
                for (k, n) in ns.enumerated() { items.append(Item(spec: spec, part: k, parts: ns.count, stacked: false, name: n, type: type, shape: spec.shape)) }
            }
        }
        let total = items.reduce(0) { $0 + $1.spec.elementCount / ($1.stacked ? $1.parts : 1) }
        var done = 0
        var summary = Summary()
        // The entry being written (its parts follow each other), quantized once.
        var current: (name: String, matrix: WeightMatrix?, floats: [Float]?)?
        try GGUFWriter.write(path: path, metadata: [("general.architecture", .string("moshi")), ("general.name", .string("Moshi LM (duplex quantize, \(recipe.name))")),
                                                    (LMConfig.ggufConfigKey, .string(config.kyutaiConfigJSON))],
                             tensors: items.map { GGUFWriter.Tensor(name: $0.name, type: $0.type, shape: $0.shape) }) { i, sink in
            let item = items[i]
            if current?.name != item.spec.name {
                if item.type == .f32 {
                    current = (item.spec.name, nil, store.tensor(item.spec.name, shape: item.spec.shape).data)
                } else {
                    let m = store.matrix(item.spec.name, shape: item.spec.shape)
                    guard let q = QuantType(ggufTypeID: item.type.rawValue), let quantized = m.quantized(to: q) else {
                        throw SafetensorsError(path: path, .badQuantization, "\(item.spec.name) cannot be quantized to \(item.type.name) (NaN/Inf or width)")
                    }
                    current = (item.spec.name, quantized, nil)
                }
            }
            if let floats = current?.floats {
                try floats.withUnsafeBytes { try sink($0) }
            } else if let m = current?.matrix, let bytes = m.quantizedBytes {
                let rowBytes = bytes.count / m.rows
                let rows = item.stacked ? m.rows / item.parts : m.rows
                let start = item.stacked ? item.part * rows * rowBytes : 0
                try sink(UnsafeRawBufferPointer(rebasing: bytes[start..<(start + rows * rowBytes)]))
            }
            summary.tensors += 1
            summary.types[item.type.name, default: 0] += 1
            done += item.spec.elementCount / (item.stacked ? item.parts : 1)
            progress?(done, total)
        }
        try store.finish()
        summary.bytes = Int((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
        return summary
    }
}
