/// A minimal reader of the protobuf wire format (varints, fixed32/64, length-delimited fields),
/// enough for SentencePiece's `ModelProto`. Every length and varint is bounds-checked against the
/// buffer, so a truncated or garbage file ends in a `ProtobufError`, never out of bounds.
public struct ProtobufError: Error, CustomStringConvertible, Sendable, Equatable {
    public let offset: Int
    public let message: String

    public var description: String { "\(message) at byte \(offset)" }
}

struct ProtobufReader {
    enum WireType: UInt8 {
        case varint = 0, fixed64 = 1, lengthDelimited = 2, startGroup = 3, endGroup = 4, fixed32 = 5
    }

    struct Field {
        let number: Int
        let wireType: WireType
        /// Where the field's value starts (after its tag).
        let valueOffset: Int
    }

    let bytes: [UInt8]
    /// Current position; `end` is exclusive and lies within `bytes`.
    private(set) var position: Int
    let end: Int

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.position = 0
        self.end = bytes.count
    }

    private init(bytes: [UInt8], range: Range<Int>) {
        self.bytes = bytes
        self.position = range.lowerBound
        self.end = range.upperBound
    }

    var isAtEnd: Bool { position >= end }

    func error(_ message: String, at offset: Int? = nil) -> ProtobufError {
        ProtobufError(offset: offset ?? position, message: message)
    }

    mutating func readVarint() throws(ProtobufError) -> UInt64 {
        let start = position
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end else {
                throw error("truncated varint (the data ends inside it)", at: start)
            }
            let byte = bytes[position]
            position += 1
            // The tenth byte may only carry the top bit of a 64-bit value.
            if shift == 63 && byte > 1 { throw error("varint longer than 64 bits", at: start) }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// The next field's tag, or nil at the end of the message.
    mutating func nextField() throws(ProtobufError) -> Field? {
        guard !isAtEnd else { return nil }
        let start = position
        let tag = try readVarint()
        let number = tag >> 3
        guard let wireType = WireType(rawValue: UInt8(tag & 7)) else {
            throw error("invalid wire type \(tag & 7) in field tag \(tag)", at: start)
        }
        guard number >= 1, number <= 0x1FFF_FFFF else {
            throw error("invalid field number \(number)", at: start)
        }
        guard wireType != .startGroup, wireType != .endGroup else {
            throw error("group wire type (\(wireType.rawValue)) in field \(number), which SentencePiece never writes",
                        at: start)
        }
        return Field(number: Int(number), wireType: wireType, valueOffset: position)
    }

    mutating func readFixed32() throws(ProtobufError) -> UInt32 {
        guard end - position >= 4 else { throw error("truncated 4-byte value") }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[position + i]) << (8 * UInt32(i)) }
        position += 4
        return v
    }

    mutating func readFixed64() throws(ProtobufError) -> UInt64 {
        guard end - position >= 8 else { throw error("truncated 8-byte value") }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(bytes[position + i]) << (8 * UInt64(i)) }
        position += 8
        return v
    }

    /// The byte range of a length-delimited value, checked to lie inside the current message.
    mutating func readLengthDelimited() throws(ProtobufError) -> Range<Int> {
        let start = position
        let length = try readVarint()
        guard length <= UInt64(end - position) else {
            throw error("length \(length) runs past the end of the data (\(end - position) bytes left)", at: start)
        }
        let range = position..<(position + Int(length))
        position = range.upperBound
        return range
    }

    mutating func readBytes() throws(ProtobufError) -> [UInt8] { Array(bytes[try readLengthDelimited()]) }

    /// A reader over an embedded message.
    mutating func readMessage() throws(ProtobufError) -> ProtobufReader {
        ProtobufReader(bytes: bytes, range: try readLengthDelimited())
    }

    mutating func readFloat() throws(ProtobufError) -> Float { Float(bitPattern: try readFixed32()) }

    mutating func readBool() throws(ProtobufError) -> Bool { try readVarint() != 0 }

    /// proto2 `int32`: the varint carries the value sign-extended to 64 bits.
    mutating func readInt32() throws(ProtobufError) -> Int32 { Int32(truncatingIfNeeded: try readVarint()) }

    mutating func skip(_ field: Field) throws(ProtobufError) {
        switch field.wireType {
        case .varint: _ = try readVarint()
        case .fixed64: _ = try readFixed64()
        case .fixed32: _ = try readFixed32()
        case .lengthDelimited: _ = try readLengthDelimited()
        case .startGroup, .endGroup: throw error("cannot skip a group field \(field.number)")
        }
    }

    /// Checks that `field` has the wire type its schema declares before its value is read.
    func expect(_ field: Field, _ wireType: WireType, _ name: String) throws(ProtobufError) {
        guard field.wireType == wireType else {
            throw error("field \(field.number) (\(name)) has wire type \(field.wireType.rawValue), expected \(wireType.rawValue)",
                        at: field.valueOffset)
        }
    }
}
