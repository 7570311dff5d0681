import NIOCore
import NIOSSL

/// How `ChatClient` checks a `wss://` server's certificate.
public struct ClientTLS: Sendable {
    /// false (`talk --insecure`): any certificate is accepted — for a self-signed server whose
    /// fingerprint was checked by hand. The connection is still encrypted.
    public var verify = true
    /// The certificates to trust instead of the system's store (PEM; tests trust exactly the
    /// server's self-signed certificate). nil: the system trust store.
    public var trustedCertificatesPEM: String?

    public init(verify: Bool = true, trustedCertificatesPEM: String? = nil) {
        self.verify = verify
        self.trustedCertificatesPEM = trustedCertificatesPEM
    }

    func makeContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if !verify { configuration.certificateVerification = .none }
        if let pem = trustedCertificatesPEM {
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8)))
            } catch {
                throw ChatServerError("the trusted certificates do not parse: \(error)")
            }
        }
        return try NIOSSLContext(configuration: configuration)
    }
}

extension ChatClient {
    /// NIOSSL's client handler (SNI with the host name; an IP address is checked against the
    /// certificate's IP addresses instead), then a handler that turns a failed handshake into an
    /// error naming the host and the reason.
    static func addTLSHandlers(context: NIOSSLContext, host: String, port: Int, to channel: any Channel,
                               failed: EventLoopPromise<ChatMessage>) throws {
        let sni = ipAddressBytes(host) == nil ? host : nil
        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: sni))
        try channel.pipeline.syncOperations.addHandler(ClientTLSFailure(host: host, port: port, failed: failed))
    }
}

private final class ClientTLSFailure: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    private let host: String
    private let port: Int
    private let failed: EventLoopPromise<ChatMessage>

    init(host: String, port: Int, failed: EventLoopPromise<ChatMessage>) {
        self.host = host
        self.port = port
        self.failed = failed
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is NIOSSLError || error is NIOSSLExtraError || error is BoringSSLError else {
            return context.fireErrorCaught(error)
        }
        failed.fail(ChatServerError(Self.explain(error, host: host, port: port)))
        context.close(promise: nil)
    }

    static func explain(_ error: any Error, host: String, port: Int) -> String {
        let text = tlsReason(error)
        if let extra = error as? NIOSSLExtraError, extra == .failedToValidateHostname {
            return "TLS with \(host):\(port) failed: the server's certificate is not for \(host) (\(text))"
        }
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            return "TLS with \(host):\(port) failed: the server's certificate is not trusted (\(text), checked against "
                + "the system's trust store or the given certificates). "
                + "A self-signed server (duplex serve --tls-self-signed) prints its SHA-256 fingerprint: compare it, then add --insecure"
        }
        if text.contains("not a TLS handshake") {
            return "TLS with \(host):\(port) failed: the server does not speak TLS there (use ws://): \(text)"
        }
        return "TLS with \(host):\(port) failed: \(text)"
    }
}
