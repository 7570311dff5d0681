import Crypto
import Foundation
import NIOCore
import NIOSSL
import SwiftASN1
import X509

#if canImport(Glibc)
import Glibc
#endif

/// `duplex serve`'s certificate and key, checked and ready for NIOSSL: from PEM files
/// (`--tls-cert/--tls-key`) or made at start-up (`--tls-self-signed`). Every problem is one error
/// that names the file and says what is wrong with it, raised before the server listens.
public struct ServerTLS: Sendable {
    public let context: NIOSSLContext
    /// The leaf certificate, DER (what the fingerprint is taken over).
    public let certificateDER: [UInt8]
    public let certificatePEM: String
    /// The names and addresses the leaf certificate is for (its subject alternative names).
    public let names: [String]
    public let notValidAfter: Date

    /// SHA-256 over the leaf certificate's DER, as `openssl x509 -noout -fingerprint -sha256` prints it:
    /// 32 upper-case hex pairs joined by colons.
    public var fingerprint: String { Self.fingerprint(der: certificateDER) }

    public static func fingerprint(der: [UInt8]) -> String {
        SHA256.hash(data: der).map { String(format: "%02X", $0) }.joined(separator: ":")
    }

    /// Reads a PEM certificate (chain: leaf first) and its PEM private key; the errors name the files.
    public init(certificateFile: String, keyFile: String, now: Date = Date()) throws {
        func read(_ path: String, _ what: String) throws -> String {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ChatServerError("cannot read \(what) \(path): " + (FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file"))
            }
            guard let text = String(data: data, encoding: .utf8) else { throw ChatServerError("\(what) \(path): not PEM text") }
            return text
        }
        try self.init(certificatePEM: read(certificateFile, "--tls-cert"), privateKeyPEM: read(keyFile, "--tls-key"),
                      certificateName: "--tls-cert \(certificateFile)", keyName: "--tls-key \(keyFile)", now: now)
    }

    /// `certificateName`/`keyName` are how errors refer to the two (a file name, usually).
    public init(certificatePEM: String, privateKeyPEM: String, certificateName: String = "the certificate",
                keyName: String = "the private key", now: Date = Date()) throws {
        let certificateBlocks = ((try? PEMDocument.parseMultiple(pemString: certificatePEM)) ?? []).filter { $0.discriminator == "CERTIFICATE" }
        guard let leafBlock = certificateBlocks.first else {
            throw ChatServerError("\(certificateName): no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)")
        }
        let leaf: Certificate
        do { leaf = try Certificate(pemDocument: leafBlock) } catch {
            throw ChatServerError("\(certificateName): the certificate does not parse (\(error))")
        }
        let keyBlocks = ((try? PEMDocument.parseMultiple(pemString: privateKeyPEM)) ?? []).filter { $0.discriminator.hasSuffix("PRIVATE KEY") }
        guard let keyBlock = keyBlocks.first else {
            throw ChatServerError("\(keyName): no PEM private key in it (expected -----BEGIN PRIVATE KEY----- or EC/RSA PRIVATE KEY)")
        }
        if keyBlock.discriminator == "ENCRYPTED PRIVATE KEY" {
            throw ChatServerError("\(keyName): the key is encrypted; decrypt it first (openssl pkey -in KEY -out KEY.plain)")
        }
        // The key must be the certificate's: compared here for a clear message (BoringSSL checks
        // again when the context is made, for key types swift-certificates does not read).
        if let key = try? Certificate.PrivateKey(pemDocument: keyBlock), key.publicKey != leaf.publicKey {
            throw ChatServerError("\(keyName) does not match \(certificateName): the key's public key is not the certificate's")
        }
        if leaf.notValidAfter < now {
            throw ChatServerError("\(certificateName): the certificate expired on \(leaf.notValidAfter) (clients will refuse it)")
        }
        let chain: [NIOSSLCertificate]
        let privateKey: NIOSSLPrivateKey
        do {
            chain = try certificateBlocks.map { try NIOSSLCertificate(bytes: Array($0.derBytes), format: .der) }
        } catch {
            throw ChatServerError("\(certificateName): the certificate does not load (\(error))")
        }
        do { privateKey = try NIOSSLPrivateKey(bytes: Array(keyBlock.pemString.utf8), format: .pem) } catch {
            throw ChatServerError("\(keyName): the private key does not parse (\(error))")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                    privateKey: .privateKey(privateKey))
        configuration.minimumTLSVersion = .tlsv12
        do { context = try NIOSSLContext(configuration: configuration) } catch {
            throw ChatServerError("\(keyName) does not fit \(certificateName): \(error)")
        }
        certificateDER = Array(leafBlock.derBytes)
        self.certificatePEM = leafBlock.pemString
        notValidAfter = leaf.notValidAfter
        names = ((try? leaf.extensions.subjectAlternativeNames) ?? nil).map { $0.map(Self.describe) } ?? []
    }

    /// A certificate made now for `hosts` (plus localhost, 127.0.0.1 and ::1): a fresh P-256 key,
    /// self-signed, valid from 5 minutes ago for `days` days, for server authentication only.
    public static func selfSigned(hosts: [String], days: Int = 30, now: Date = Date()) throws -> ServerTLS {
        let identity = try makeSelfSigned(hosts: hosts, days: days, now: now)
        return try ServerTLS(certificatePEM: identity.certificatePEM, privateKeyPEM: identity.privateKeyPEM,
                             certificateName: "the self-signed certificate", keyName: "its key", now: now)
    }

    /// The PEM texts of a self-signed certificate and its key (tests write them to files).
    /// `loopback: false` leaves localhost, 127.0.0.1 and ::1 out (tests of name validation).
    public static func makeSelfSigned(hosts: [String], days: Int = 30, now: Date = Date(), loopback: Bool = true) throws
        -> (certificatePEM: String, privateKeyPEM: String)
    {
        let key = P256.Signing.PrivateKey()
        var seen = Set<String>()
        var names: [GeneralName] = []
        for host in (loopback ? ["localhost", "127.0.0.1", "::1"] : []) + hosts {
            let name = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
            guard !name.isEmpty, seen.insert(name).inserted else { continue }
            if let address = ipAddressBytes(name) {
                guard address.contains(where: { $0 != 0 }) else { continue }  // 0.0.0.0 / :: are no one's address
                names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(address))))
            } else {
                names.append(.dnsName(name))
            }
        }
        let subject = try DistinguishedName {
            OrganizationName("duplex (self-signed)")
            CommonName("duplex serve")
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(Double(days) * 86_400),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                // No KeyUsage: with one that lacks keyCertSign, OpenSSL and BoringSSL cannot
                // take the certificate as its own issuer, so a client could not trust exactly it.
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(names)
            },
            issuerPrivateKey: .init(key))
        return (try certificate.serializeAsPEM().pemString, key.pemRepresentation)
    }

    /// The names a self-signed certificate covers: --host, and for a wildcard host (0.0.0.0, ::)
    /// this machine's name and every address of its interfaces, which is how others reach it.
    public static func names(listeningOn host: String) -> [String] {
        var names = [host]
        let wildcard = host == "0.0.0.0" || host == "::" || host == "[::]"
        if wildcard {
            names.append(ProcessInfo.processInfo.hostName)
            for device in (try? System.enumerateDevices()) ?? [] {
                // Link-local IPv6 (fe80::) needs a zone a URL cannot carry: no one reaches the server by it.
                if let ip = device.address?.ipAddress, !ip.lowercased().hasPrefix("fe80") { names.append(ip) }
            }
        }
        return names
    }

    private static func describe(_ name: GeneralName) -> String {
        switch name {
        case .dnsName(let s): return s
        case .ipAddress(let octets):
            let bytes = Array(octets.bytes)
            if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            return bytes.withUnsafeBytes { inet_ntop(AF_INET6, $0.baseAddress, &buffer, socklen_t(buffer.count)) } != nil
                ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        default: return String(describing: name)
        }
    }
}

/// The 4 or 16 bytes of an IPv4/IPv6 literal; nil for a name.
func ipAddressBytes(_ s: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
    return nil
}

// MARK: server pipeline

extension ChatServer {
    /// Puts TLS in front of the HTTP pipeline: a first-byte check (plain HTTP gets a 400 in
    /// plain text; anything that is not a TLS record is closed), NIOSSL's server handler, and a
    /// handler that logs a failed handshake once and closes the connection.
    static func addTLSHandlers(_ tls: ServerTLS, to channel: any Channel, log: @escaping @Sendable (String) -> Void) throws {
        let peer = channel.remoteAddress.map { address in
            address.ipAddress.map { ip in (ip.contains(":") ? "[\(ip)]" : ip) + ":\(address.port ?? 0)" } ?? "\(address)"
        } ?? "a client"
        let sync = channel.pipeline.syncOperations
        let state = TLSConnectionLog(peer: peer, log: log)
        try sync.addHandler(TLSRecordCheck(state))
        try sync.addHandler(NIOSSLServerHandler(context: tls.context))
        try sync.addHandler(TLSFailureLog(state))
    }

    /// What `bind` failing means, for a person.
    static func bindFailure(_ error: any Error, host: String, port: Int) -> ChatServerError {
        if let io = error as? IOError {
            switch io.errnoCode {
            case EADDRINUSE: return ChatServerError("cannot listen on \(host):\(port): the port is already in use (another duplex serve? pick one with --port)")
            case EACCES: return ChatServerError("cannot listen on \(host):\(port): permission denied (ports below 1024 need privileges)")
            case EADDRNOTAVAIL: return ChatServerError("cannot listen on \(host):\(port): \(host) is not an address of this machine")
            default: break
            }
        }
        return ChatServerError("cannot listen on \(host):\(port): \(error)")
    }
}

/// What one connection has logged (its event loop only): one line at most, and none for a
/// client that left before sending a byte.
final class TLSConnectionLog {
    let peer: String
    private let sink: @Sendable (String) -> Void
    private var logged = false
    var sawTLSRecord = false

    init(peer: String, log: @escaping @Sendable (String) -> Void) {
        self.peer = peer
        sink = log
    }

    func log(_ line: String) {
        guard !logged else { return }
        logged = true
        sink(line)
    }
}

/// The first byte of a TLS connection is a handshake record (0x16). A plain HTTP request (a
/// letter) gets a 400 in plain text saying to use https://, anything else is closed; both are
/// logged once. Removes itself once the first byte is a TLS record.
final class TLSRecordCheck: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let state: TLSConnectionLog
    private var refused = false

    init(_ state: TLSConnectionLog) { self.state = state }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        if first == 0x16 {
            state.sawTLSRecord = true
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        refused = true
        if (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(first) {
            state.log("duplex serve: plain HTTP from \(state.peer) on the TLS port: answered 400 (use https:// or wss://)")
            let body = "This port speaks TLS: use https:// (wss:// for /api/chat).\n"
            let response = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
            var out = context.channel.allocator.buffer(capacity: response.utf8.count)
            out.writeString(response)
            context.writeAndFlush(wrapOutboundOut(out)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        } else {
            state.log("duplex serve: \(state.peer) sent something that is not TLS (first byte 0x\(String(first, radix: 16))): closed")
            context.close(promise: nil)
        }
    }
}

/// Logs a failed TLS handshake (or another TLS error) once per connection and closes it. A client
/// that hangs up without TLS's close_notify (browsers do) is not worth a line.
final class TLSFailureLog: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    private let state: TLSConnectionLog

    init(_ state: TLSConnectionLog) { self.state = state }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is NIOSSLError || error is BoringSSLError else { return context.fireErrorCaught(error) }
        if case .uncleanShutdown? = error as? NIOSSLError {} else if state.sawTLSRecord {
            state.log("duplex serve: TLS with \(state.peer) failed: \(tlsReason(error)): closed")
        }
        context.close(promise: nil)
    }
}

/// BoringSSL's reason for a TLS error (`CERTIFICATE_VERIFY_FAILED`, `TLSV1_ALERT_UNKNOWN_CA`, …)
/// with what it means where that is not obvious, rather than its whole error stack.
func tlsReason(_ error: any Error) -> String {
    let text = "\(error)"
    let reasons = text.components(separatedBy: "OPENSSL_internal:").dropFirst().compactMap { part in
        part.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") }).first.map(String.init)
    }
    guard let reason = reasons.last else {
        if text.contains("EOF during handshake") { return "the peer closed the connection during the handshake" }
        return text
    }
    switch reason {
    case "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_UNKNOWN":
        return "\(reason) (the client does not trust this certificate)"
    case "WRONG_VERSION_NUMBER", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG", "EXCESSIVE_MESSAGE_SIZE":
        return "\(reason) (not a TLS handshake)"
    case "NO_SHARED_CIPHER", "UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION":
        return "\(reason) (no TLS version or cipher in common)"
    default:
        return reason
    }
}
