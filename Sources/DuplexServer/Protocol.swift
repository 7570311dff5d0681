/// Kyutai's chat protocol (moshi-spec.md §6.1): every websocket message is binary, its first byte
/// the kind, the rest the payload. Both directions use the same framing.
public enum MessageKind: UInt8, Sendable {
    case handshake = 0
    case audio = 1
    case text = 2
    case control = 3
    case metadata = 4
    case error = 5
    case ping = 6
    case coloredText = 7
}

/// A control payload (kind 3); Kyutai marks these "not used in full streaming mode".
public enum ControlAction: UInt8, Sendable {
    case start = 0, endTurn = 1, pause = 2, restart = 3
}

/// One protocol message. Kinds this side does not know decode to `.unknown` so the caller can
/// drop them, as the protocol asks, instead of failing the session.
public enum ChatMessage: Equatable, Sendable {
    /// Protocol version and model version, both 0 today.
    case handshake(protocolVersion: UInt32, modelVersion: UInt32)
    /// Ogg pages holding Opus packets (24 kHz mono); pages may span messages.
    case audio([UInt8])
    case text(String)
    case control(UInt8)
    case metadata(String)
    case error(String)
    case ping
    case unknown(kind: UInt8, payload: [UInt8])

    /// The server handshake: 0x00 followed by protocol version 0 and model version 0 (u32 LE each),
    /// as `rust/protocol.md` specifies and Kyutai's Rust backend sends. Kyutai's Python client, web
    /// client and Rust client all look at the kind byte only, so this is as compatible as the
    /// Python server's bare 0x00 and carries the versions the spec asks for.
    public static let serverHandshake = ChatMessage.handshake(protocolVersion: 0, modelVersion: 0)

    public var kind: UInt8 {
        switch self {
        case .handshake: MessageKind.handshake.rawValue
        case .audio: MessageKind.audio.rawValue
        case .text: MessageKind.text.rawValue
        case .control: MessageKind.control.rawValue
        case .metadata: MessageKind.metadata.rawValue
        case .error: MessageKind.error.rawValue
        case .ping: MessageKind.ping.rawValue
        case .unknown(let kind, _): kind
        }
    }

    /// The message's bytes on the wire (kind byte first).
    public func encoded() -> [UInt8] {
        var out: [UInt8] = [kind]
        switch self {
        case .handshake(let p, let m):
            for v in [p, m] { for i in 0..<4 { out.append(UInt8((v >> (8 * UInt32(i))) & 0xFF)) } }
        case .audio(let bytes): out += bytes
        case .text(let s), .metadata(let s), .error(let s): out += Array(s.utf8)
        case .control(let c): out.append(c)
        case .ping: break
        case .unknown(_, let payload): out += payload
        }
        return out
    }

    /// Decodes one message. An empty message, or a text/error payload that is not UTF-8, is a
    /// `ChatProtocolError` (the caller decides whether that matters); unknown kinds are not errors.
    public static func decode<Bytes: Collection>(_ bytes: Bytes) throws(ChatProtocolError) -> ChatMessage
    where Bytes.Element == UInt8 {
        guard let first = bytes.first else { throw ChatProtocolError("empty message (no kind byte)") }
        let payload = bytes.dropFirst()
        func utf8(_ what: String) throws(ChatProtocolError) -> String {
            guard let s = String(validating: payload, as: UTF8.self) else {
                throw ChatProtocolError("\(what) message is not valid UTF-8")
            }
            return s
        }
        guard let kind = MessageKind(rawValue: first) else { return .unknown(kind: first, payload: Array(payload)) }
        switch kind {
        case .handshake:
            // A bare 0x00 (Kyutai's Python server) means versions 0/0.
            let p = Array(payload)
            func u32(_ at: Int) -> UInt32 {
                guard p.count >= at + 4 else { return 0 }
                return (0..<4).reduce(0) { $0 | UInt32(p[at + $1]) << (8 * UInt32($1)) }
            }
            return .handshake(protocolVersion: u32(0), modelVersion: u32(4))
        case .audio: return .audio(Array(payload))
        case .text: return .text(try utf8("text"))
        case .control:
            guard let c = payload.first else { throw ChatProtocolError("control message without its action byte") }
            return .control(c)
        case .metadata: return .metadata(try utf8("metadata"))
        case .error: return .error(try utf8("error"))
        case .ping: return .ping
        case .coloredText: return .unknown(kind: first, payload: Array(payload))
        }
    }
}

public struct ChatProtocolError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
