import DuplexServer
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A deliberately plain websocket client over a blocking socket, with a hand-written handshake
/// and framing, so tests can do what well-behaved clients never do: send text frames, oversized
/// or fragmented messages, stop reading, vanish without a close.
final class RawWebSocket: @unchecked Sendable {  // one thread at a time
    enum Event: Equatable {
        case message(ChatMessage)
        case close(UInt16?)
        case eof
        case timeout
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    private let fd: Int32
    private var buffer: [UInt8] = []
    private var open = true

    /// Connects to 127.0.0.1:port. `receiveBuffer` shrinks SO_RCVBUF (a client that will not read).
    init(port: Int, receiveBuffer: Int? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket() failed") }
        if var size = receiveBuffer.map(Int32.init) {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            Glibc.close(fd)
            throw Failure(description: "connect to port \(port) failed: errno \(errno)")
        }
    }

    deinit { close() }

    func close() {
        if open { Glibc.close(fd); open = false }
    }

    @discardableResult
    func write(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    /// Reads more bytes within `timeout` seconds; false on timeout, EOF or error.
    private func fill(timeout: Double) -> Bool? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, Int32(timeout * 1000))
        if ready == 0 { return nil }  // timeout
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { return false }
        buffer += chunk[0..<n]
        return true
    }

    /// The bytes as they come (any already buffered first): nil on timeout, empty at EOF.
    func readRaw(timeout: Double) -> [UInt8]? {
        if buffer.isEmpty {
            switch fill(timeout: timeout) {
            case nil: return nil
            case false?: return []
            case true?: break
            }
        }
        defer { buffer.removeAll() }
        return buffer
    }

    // MARK: HTTP

    /// Sends a websocket upgrade request; returns the response status and its headers' text.
    func upgrade(path: String = "/api/chat", headers: [String] = []) throws -> (status: Int, head: String) {
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        for h in headers { request += h + "\r\n" }
        write(Array((request + "\r\n").utf8))
        return try readHead()
    }

    /// A plain GET; reads the whole response (the server closes after it).
    func get(_ path: String) throws -> (status: Int, body: String) {
        write(Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
        let (status, _) = try readHead()
        while fill(timeout: 5) == true {}
        return (status, String(decoding: buffer, as: UTF8.self))
    }

    /// Any request without a body (POST /admin/drain); reads the whole response.
    func request(_ method: String, _ path: String, headers: [String] = []) throws -> (status: Int, head: String, body: String) {
        var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
        for h in headers { request += h + "\r\n" }
        write(Array((request + "\r\n").utf8))
        let (status, head) = try readHead()
        while fill(timeout: 5) == true {}
        return (status, head, String(decoding: buffer, as: UTF8.self))
    }

    private func readHead() throws -> (status: Int, head: String) {
        let end = Array("\r\n\r\n".utf8)
        while true {
            if let i = firstIndex(of: end) {
                let head = String(decoding: buffer[0..<i], as: UTF8.self)
                buffer.removeFirst(i + 4)
                let parts = head.split(separator: " ", maxSplits: 2)
                guard parts.count >= 2, let status = Int(parts[1]) else { throw Failure(description: "bad response: \(head)") }
                return (status, head)
            }
            guard fill(timeout: 5) == true else { throw Failure(description: "no HTTP response") }
        }
    }

    private func firstIndex(of needle: [UInt8]) -> Int? {
        guard buffer.count >= needle.count else { return nil }
        for i in 0...(buffer.count - needle.count) where buffer[i] == needle[0] && Array(buffer[i..<(i + needle.count)]) == needle {
            return i
        }
        return nil
    }

    // MARK: websocket frames

    /// Sends one masked frame (clients must mask, RFC 6455 §5.3).
    @discardableResult
    func sendFrame(opcode: UInt8, payload: [UInt8], fin: Bool = true) -> Bool {
        var frame: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let n = payload.count
        if n < 126 {
            frame.append(0x80 | UInt8(n))
        } else if n < 65_536 {
            frame += [0x80 | 126, UInt8(n >> 8), UInt8(n & 0xFF)]
        } else {
            frame.append(0x80 | 127)
            for i in (0..<8).reversed() { frame.append(UInt8((UInt64(n) >> (8 * UInt64(i))) & 0xFF)) }
        }
        let mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset & 3] }
        return write(frame)
    }

    @discardableResult
    func send(_ message: ChatMessage) -> Bool { sendFrame(opcode: 2, payload: message.encoded()) }

    /// The next message, close, EOF or timeout. Pings are answered, pongs skipped.
    func next(timeout: Double = 5) -> Event {
        while true {
            if let (opcode, payload) = takeFrame() {
                switch opcode {
                case 2:
                    guard let m = try? ChatMessage.decode(payload) else { continue }
                    return .message(m)
                case 8:
                    return .close(payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil)
                case 9:
                    sendFrame(opcode: 10, payload: payload)
                default:
                    continue
                }
                continue
            }
            switch fill(timeout: timeout) {
            case nil: return .timeout
            case false?: return .eof
            case true?: continue
            }
        }
    }

    /// Messages until `count` audio messages arrived (or the stream ends); returns all of them.
    func collect(audioMessages count: Int, timeout: Double = 5) -> [ChatMessage] {
        var out: [ChatMessage] = []
        var audio = 0
        while audio < count {
            guard case .message(let m) = next(timeout: timeout) else { break }
            out.append(m)
            if case .audio = m { audio += 1 }
        }
        return out
    }

    /// One unmasked server frame from the buffer (fragmentation is not used by the server).
    private func takeFrame() -> (UInt8, [UInt8])? {
        guard buffer.count >= 2 else { return nil }
        let opcode = buffer[0] & 0x0F
        var length = Int(buffer[1] & 0x7F)
        var offset = 2
        if length == 126 {
            guard buffer.count >= 4 else { return nil }
            length = Int(buffer[2]) << 8 | Int(buffer[3])
            offset = 4
        } else if length == 127 {
            guard buffer.count >= 10 else { return nil }
            length = (2..<10).reduce(0) { $0 << 8 | Int(buffer[$1]) }
            offset = 10
        }
        guard buffer.count >= offset + length else { return nil }
        let payload = Array(buffer[offset..<(offset + length)])
        buffer.removeFirst(offset + length)
        return (opcode, payload)
    }
}
