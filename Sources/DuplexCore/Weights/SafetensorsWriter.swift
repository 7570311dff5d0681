import Foundation

/// Writes safetensors files: codes and test artefacts from the engine, weights from tools.
/// Tensors are laid out in insertion order; the header is padded with spaces to 8 bytes so
/// every tensor starts aligned, as the reference writer does.
public struct SafetensorsWriter {
    private struct Pending {
        let name: String
        let dtype: DType
        let shape: [Int]
        let bytes: Data
    }
    private var pending: [Pending] = []
    public var metadata: [String: String] = [:]

    public init(metadata: [String: String] = [:]) { self.metadata = metadata }

    public mutating func add(_ name: String, _ tensor: Tensor, as dtype: DType = .f32) {
        precondition(dtype.isFloatingPoint && dtype != .f64, "float tensors are written as F32, F16 or BF16")
        var data = Data(capacity: tensor.count * dtype.byteSize)
        switch dtype {
        case .f32:
            tensor.data.withUnsafeBytes { data.append(contentsOf: $0) }
        case .bf16, .f16:
            var bits = tensor.data.map { dtype == .bf16 ? HalfPrecision.floatToBF16($0) : HalfPrecision.floatToF16($0) }
            for i in bits.indices { bits[i] = bits[i].littleEndian }
            bits.withUnsafeBytes { data.append(contentsOf: $0) }
        default: break
        }
        append(name, dtype, tensor.shape, data)
    }

    public mutating func add(_ name: String, int64 values: [Int64], shape: [Int]) {
        precondition(shape.reduce(1, *) == values.count)
        append(name, .i64, shape, values.map(\.littleEndian).withUnsafeBytes { Data($0) })
    }

    public mutating func add(_ name: String, int32 values: [Int32], shape: [Int]) {
        precondition(shape.reduce(1, *) == values.count)
        append(name, .i32, shape, values.map(\.littleEndian).withUnsafeBytes { Data($0) })
    }

    /// Raw bytes with a declared dtype and shape (checked for consistency).
    public mutating func add(_ name: String, raw: Data, dtype: DType, shape: [Int]) {
        precondition(shape.reduce(1, *) * dtype.byteSize == raw.count, "\(name): byte count does not match shape")
        append(name, dtype, shape, raw)
    }

    private mutating func append(_ name: String, _ dtype: DType, _ shape: [Int], _ bytes: Data) {
        precondition(name != "__metadata__" && !pending.contains { $0.name == name }, "duplicate tensor name \(name)")
        pending.append(Pending(name: name, dtype: dtype, shape: shape, bytes: bytes))
    }

    /// The complete file contents.
    public func serialized() -> Data {
        var header = "{"
        var parts: [String] = []
        if !metadata.isEmpty {
            let items = metadata.sorted { $0.key < $1.key }.map { "\(Self.quote($0.key)):\(Self.quote($0.value))" }
            parts.append("\"__metadata__\":{\(items.joined(separator: ","))}")
        }
        var offset = 0
        for p in pending {
            let shape = p.shape.map(String.init).joined(separator: ",")
            parts.append("\(Self.quote(p.name)):{\"dtype\":\"\(p.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + p.bytes.count)]}")
            offset += p.bytes.count
        }
        header += parts.joined(separator: ",") + "}"
        var headerBytes = Data(header.utf8)
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(0x20) }
        var out = Data(capacity: 8 + headerBytes.count + offset)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(headerBytes)
        for p in pending { out.append(p.bytes) }
        return out
    }

    public func write(to path: String) throws {
        do {
            try serialized().write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw SafetensorsError(path: path, .io, "cannot write: \(error.localizedDescription)")
        }
    }

    private static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 { out += String(format: "\\u%04x", scalar.value) } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out + "\""
    }
}
