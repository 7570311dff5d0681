import Foundation

/// NumPy `.npy` files (format 1.0/2.0/3.0, C order), for code arrays the tools exchange with numpy:
/// codes are int32 `[codebooks, frames]`. Reads little-endian int32/int64/int16/uint8 and float32,
/// writes int32 and float32.
public enum NPY {
    public struct Array: Sendable, Equatable {
        public var shape: [Int]
        public var int32: [Int32]
        public init(shape: [Int], int32: [Int32]) {
            self.shape = shape
            self.int32 = int32
        }
    }

    public struct FormatError: Error, CustomStringConvertible, Sendable {
        public let path: String
        public let message: String
        public var description: String { "\(path): \(message)" }
    }

    private static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY

    /// Reads an integer array (int8/16/32/64, uint8/16/32 little-endian), narrowed to Int32 with
    /// a range check.
    public static func readInt32(_ path: String) throws -> Array {
        let (descr, shape, body) = try readRaw(path)
        let count = shape.reduce(1, *)
        let widths: [String: Int] = ["<i8": 8, "<i4": 4, "<i2": 2, "|i1": 1, "|u1": 1, "<u2": 2, "<u4": 4]
        guard let width = widths[descr] else {
            throw FormatError(path: path, message: "dtype \(descr) is not an integer type (codes must be int32)")
        }
        guard body.count >= count * width else {
            throw FormatError(path: path, message: "truncated: shape \(shape) needs \(count * width) bytes, file has \(body.count)")
        }
        var out = [Int32](repeating: 0, count: count)
        try body.withUnsafeBytes { raw in
            for i in 0..<count {
                let v: Int64
                switch descr {
                case "<i8": v = raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)
                case "<i4": v = Int64(raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))
                case "<i2": v = Int64(raw.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))
                case "|i1": v = Int64(raw.load(fromByteOffset: i, as: Int8.self))
                case "|u1": v = Int64(raw.load(fromByteOffset: i, as: UInt8.self))
                case "<u2": v = Int64(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                default: v = Int64(raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                }
                guard let narrow = Int32(exactly: v) else {
                    throw FormatError(path: path, message: "value \(v) at flat index \(i) does not fit int32")
                }
                out[i] = narrow
            }
        }
        return Array(shape: shape, int32: out)
    }

    /// Reads a float32 array.
    public static func readFloat32(_ path: String) throws -> Tensor {
        let (descr, shape, body) = try readRaw(path)
        guard descr == "<f4" else { throw FormatError(path: path, message: "dtype \(descr), expected <f4 (float32)") }
        let count = shape.reduce(1, *)
        guard body.count >= count * 4 else {
            throw FormatError(path: path, message: "truncated: shape \(shape) needs \(count * 4) bytes, file has \(body.count)")
        }
        var data = [Float](repeating: 0, count: count)
        body.withUnsafeBytes { raw in
            for i in 0..<count { data[i] = raw.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        }
        return Tensor(shape: shape, data: data)
    }

    public static func writeInt32(_ path: String, _ array: Array) throws {
        precondition(array.shape.reduce(1, *) == array.int32.count, "shape does not match values")
        try write(path, descr: "<i4", shape: array.shape, body: array.int32.map(\.littleEndian).withUnsafeBytes { Data($0) })
    }

    public static func writeFloat32(_ path: String, _ tensor: Tensor) throws {
        try write(path, descr: "<f4", shape: tensor.shape, body: tensor.data.withUnsafeBytes { Data($0) })
    }

    // MARK: format

    private static func write(_ path: String, descr: String, shape: [Int], body: Data) throws {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        // Pad so that magic(6) + version(2) + length(2) + header + "\n" is a multiple of 64.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out = Data(magic)
        out.append(contentsOf: [1, 0])
        withUnsafeBytes(of: UInt16(header.utf8.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(Data(header.utf8))
        out.append(body)
        do {
            try out.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw FormatError(path: path, message: "cannot write: \(error.localizedDescription)")
        }
    }

    private static func readRaw(_ path: String) throws -> (descr: String, shape: [Int], body: Data) {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe) } catch {
            throw FormatError(path: path, message: "cannot read: \(error.localizedDescription)")
        }
        let bytes = [UInt8](data.prefix(12))
        guard bytes.count >= 10, Swift.Array(bytes[0..<6]) == magic else {
            throw FormatError(path: path, message: "not a .npy file (bad magic)")
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        if major == 1 {
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        } else if major == 2 || major == 3, bytes.count >= 12 {
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        } else {
            throw FormatError(path: path, message: "unsupported .npy version \(major)")
        }
        guard headerStart + headerLength <= data.count,
              let header = String(data: data.subdata(in: headerStart..<(headerStart + headerLength)), encoding: .utf8) else {
            throw FormatError(path: path, message: "truncated or unreadable header")
        }
        guard let descr = field(header, "descr").map({ $0.trimmingCharacters(in: CharacterSet(charactersIn: "'\" ")) }) else {
            throw FormatError(path: path, message: "header has no descr")
        }
        if let order = field(header, "fortran_order"), order.contains("True") {
            throw FormatError(path: path, message: "Fortran-ordered arrays are not supported (save with np.ascontiguousarray)")
        }
        guard let shapeText = header.range(of: "'shape':").map({ header[$0.upperBound...] }),
              let open = shapeText.firstIndex(of: "("), let close = shapeText.firstIndex(of: ")") else {
            throw FormatError(path: path, message: "header has no shape")
        }
        let dims = shapeText[shapeText.index(after: open)..<close].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var shape: [Int] = []
        for d in dims {
            guard let v = Int(d), v >= 0 else { throw FormatError(path: path, message: "bad shape dimension \(d)") }
            shape.append(v)
        }
        return (descr, shape, data.subdata(in: (headerStart + headerLength)..<data.count))
    }

    private static func field(_ header: String, _ key: String) -> String? {
        guard let r = header.range(of: "'\(key)':") else { return nil }
        let rest = header[r.upperBound...]
        let end = rest.firstIndex(of: ",") ?? rest.endIndex
        return String(rest[..<end])
    }
}
