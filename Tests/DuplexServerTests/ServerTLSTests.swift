import Crypto
@testable import DuplexServer
import Foundation
import NIOConcurrencyHelpers
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `duplex serve` over TLS: a self-signed certificate made in the test, a ChatClient that trusts
/// exactly that certificate, and raw sockets that send what TLS clients never do.
final class ServerTLSTests: XCTestCase {
    /// Lines the server logs, for counting.
    final class LogLines: Sendable {
        private let lines = NIOLockedValueBox<[String]>([])
        var all: [String] { lines.withLockedValue { $0 } }
        func append(_ s: String) { lines.withLockedValue { $0.append(s) } }
    }

    private func startTLSServer(_ tls: ServerTLS, log: LogLines) async throws -> (ChatServer, Int) {
        try await startServer(echoModel()) {
            $0.tls = tls
            $0.log = { log.append($0) }
        }
    }

    /// Connects over TLS, checks the handshake, sends `frames` frames and waits for their audio.
    private func converse(port: Int, trusting pem: String?, verify: Bool = true, frames: Int = 10) async throws -> Int {
        let received = NIOLockedValueBox(0)
        var events = ChatClient.Events()
        events.audio = { pcm in received.withLockedValue { $0 += pcm.count } }
        let client = try await ChatClient.connect(url: "wss://127.0.0.1:\(port)", tls: ClientTLS(verify: verify, trustedCertificatesPEM: pem),
                                                  events: events, timeout: .seconds(10))
        XCTAssertEqual(client.handshake, .serverHandshake)
        let pcm = speechLike(1920 * frames)
        for f in 0..<frames { client.send(Array(pcm[(f * 1920)..<((f + 1) * 1920)])) }
        await expectEventually("audio for \(frames) frames", seconds: 10) { received.withLockedValue { $0 } >= 1920 * (frames - 1) }
        await client.close()
        return received.withLockedValue { $0 }
    }

    func testAWebsocketConversationOverTLSWithASelfSignedCertificate() async throws {
        let tls = try ServerTLS.selfSigned(hosts: ["127.0.0.1"])
        let log = LogLines()
        let (server, port) = try await startTLSServer(tls, log: log)
        let samples = try await converse(port: port, trusting: tls.certificatePEM)
        XCTAssertGreaterThanOrEqual(samples, 1920 * 9)
        XCTAssertEqual(log.all, [], "a good TLS client is not logged")
        try await server.stop()
    }

    func testAnUntrustedCertificateFailsNamingTheHostAndInsecureAcceptsIt() async throws {
        let tls = try ServerTLS.selfSigned(hosts: [])
        let (server, port) = try await startTLSServer(tls, log: LogLines())
        do {
            _ = try await ChatClient.connect(url: "wss://127.0.0.1:\(port)", events: ChatClient.Events(), timeout: .seconds(10))
            XCTFail("a self-signed certificate is not in the system's trust store")
        } catch {
            let text = "\(error)"
            XCTAssertTrue(text.contains("127.0.0.1:\(port)") && text.contains("not trusted") && text.contains("--insecure"), text)
        }
        // A different self-signed certificate is not trusted either.
        let other = try ServerTLS.selfSigned(hosts: [])
        do {
            _ = try await ChatClient.connect(url: "wss://127.0.0.1:\(port)", tls: ClientTLS(trustedCertificatesPEM: other.certificatePEM),
                                             events: ChatClient.Events(), timeout: .seconds(10))
            XCTFail("trusted the wrong certificate")
        } catch {
            XCTAssertTrue("\(error)".contains("not trusted"), "\(error)")
        }
        let samples = try await converse(port: port, trusting: nil, verify: false)
        XCTAssertGreaterThan(samples, 0)
        try await server.stop()
    }

    func testACertificateForOtherNamesFailsHostnameValidation() async throws {
        let identity = try ServerTLS.makeSelfSigned(hosts: ["example.invalid"], loopback: false)
        let tls = try ServerTLS(certificatePEM: identity.certificatePEM, privateKeyPEM: identity.privateKeyPEM)
        XCTAssertEqual(tls.names, ["example.invalid"])
        let (server, port) = try await startTLSServer(tls, log: LogLines())
        do {
            _ = try await ChatClient.connect(url: "wss://127.0.0.1:\(port)", tls: ClientTLS(trustedCertificatesPEM: tls.certificatePEM),
                                             events: ChatClient.Events(), timeout: .seconds(5))
            XCTFail("connected although the certificate is not for 127.0.0.1")
        } catch {
            XCTAssertTrue("\(error)".contains("not for 127.0.0.1"), "\(error)")
        }
        try await server.stop()
    }

    func testTheSelfSignedCertificateCoversLocalhostAndTheHost() throws {
        let tls = try ServerTLS.selfSigned(hosts: ["duplex.lan", "192.168.1.20", "0.0.0.0"])
        XCTAssertEqual(Set(tls.names), ["localhost", "127.0.0.1", "::1", "duplex.lan", "192.168.1.20"], "0.0.0.0 is no one's address")
        let days = tls.notValidAfter.timeIntervalSinceNow / 86_400
        XCTAssertEqual(days, 30, accuracy: 0.1)
        XCTAssertTrue(ServerTLS.names(listeningOn: "0.0.0.0").contains("127.0.0.1"), "a wildcard host lists the machine's addresses")
    }

    func testTheFingerprintIsOpenSSLsSHA256Format() throws {
        let tls = try ServerTLS.selfSigned(hosts: [])
        let fingerprint = tls.fingerprint
        XCTAssertNotNil(fingerprint.range(of: "^([0-9A-F]{2}:){31}[0-9A-F]{2}$", options: .regularExpression), fingerprint)
        let expected = SHA256.hash(data: tls.certificateDER).map { String(format: "%02X", $0) }.joined(separator: ":")
        XCTAssertEqual(fingerprint, expected)
        // And what openssl itself prints, where it is installed.
        let openssl = "/usr/bin/openssl"
        guard FileManager.default.isExecutableFile(atPath: openssl) else { return }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("duplex-fp-\(UUID().uuidString).pem")
        try tls.certificatePEM.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: openssl)
        process.arguments = ["x509", "-noout", "-fingerprint", "-sha256", "-in", file.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        process.waitUntilExit()
        let printed = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(printed.split(separator: "=").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }, fingerprint, printed)
    }

    func testAMismatchedKeyOrABadFileIsOneErrorNamingTheFile() throws {
        let a = try ServerTLS.makeSelfSigned(hosts: [])
        let b = try ServerTLS.makeSelfSigned(hosts: [])
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("duplex-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func write(_ name: String, _ text: String) throws -> String {
            let url = dir.appendingPathComponent(name)
            try text.write(to: url, atomically: true, encoding: .utf8)
            return url.path
        }
        let cert = try write("cert.pem", a.certificatePEM)
        let key = try write("key.pem", a.privateKeyPEM)
        let otherKey = try write("other-key.pem", b.privateKeyPEM)
        let garbage = try write("garbage.pem", "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
        let text = try write("text.pem", "hello\n")

        XCTAssertNoThrow(try ServerTLS(certificateFile: cert, keyFile: key))
        func message(_ certificate: String, _ key: String) -> String {
            do { _ = try ServerTLS(certificateFile: certificate, keyFile: key); return "no error" } catch { return "\(error)" }
        }
        let mismatch = message(cert, otherKey)
        XCTAssertTrue(mismatch.contains(otherKey) && mismatch.contains(cert) && mismatch.contains("does not match"), mismatch)
        let notParsing = message(garbage, key)
        XCTAssertTrue(notParsing.contains(garbage) && notParsing.contains("does not parse"), notParsing)
        let noCertificate = message(text, key)
        XCTAssertTrue(noCertificate.contains(text) && noCertificate.contains("no PEM certificate"), noCertificate)
        let noKey = message(cert, text)
        XCTAssertTrue(noKey.contains(text) && noKey.contains("no PEM private key"), noKey)
        let missing = message(cert, dir.appendingPathComponent("nope.pem").path)
        XCTAssertTrue(missing.contains("nope.pem") && missing.contains("no such file"), missing)
        let swapped = message(key, cert)
        XCTAssertTrue(swapped.contains("no PEM certificate"), swapped)
    }

    func testPlainHTTPAndGarbageAreRefusedOnceEachAndTLSStillWorks() async throws {
        let tls = try ServerTLS.selfSigned(hosts: [])
        let log = LogLines()
        let (server, port) = try await startTLSServer(tls, log: log)

        // Plain HTTP: a 400 in plain text saying to use https://, then the connection closes.
        let plain = try RawWebSocket(port: port)
        let (status, body) = try plain.get("/healthz")
        XCTAssertEqual(status, 400)
        XCTAssertTrue(body.contains("https://"), body)
        XCTAssertEqual(plain.next(timeout: 2), .eof)

        // A websocket upgrade in plain text: the same.
        let upgrade = try RawWebSocket(port: port)
        XCTAssertEqual(try upgrade.upgrade().status, 400)

        // A TLS record header followed by garbage: the handshake fails, the connection closes.
        let garbage = try RawWebSocket(port: port)
        garbage.write([0x16, 0x03, 0x01, 0x00, 0x10] + (0..<16).map { UInt8($0 * 37 & 0xFF) })
        XCTAssertEqual(garbage.next(timeout: 5), .eof)

        // Bytes that are no TLS record at all: closed.
        let binary = try RawWebSocket(port: port)
        binary.write([0x00, 0xFF, 0x13, 0x37, 0x42])
        XCTAssertEqual(binary.next(timeout: 5), .eof)

        // A client that connects and leaves before any byte: nothing to log.
        try RawWebSocket(port: port).close()

        await expectEventually("4 log lines") { log.all.count >= 4 }
        try? await Task.sleep(nanoseconds: 200_000_000)
        XCTAssertEqual(log.all.count, 4, "one line per refused connection: \(log.all)")
        XCTAssertEqual(log.all.filter { $0.contains("plain HTTP") }.count, 2, "\(log.all)")
        XCTAssertEqual(log.all.filter { $0.contains("TLS with") && $0.contains("failed") }.count, 1, "\(log.all)")
        XCTAssertEqual(log.all.filter { $0.contains("not TLS") }.count, 1, "\(log.all)")

        // The server is still up and a TLS client still talks.
        let samples = try await converse(port: port, trusting: tls.certificatePEM, frames: 5)
        XCTAssertGreaterThan(samples, 0)
        try await server.stop()
    }

    func testAPlainClientToATLSServerAndATLSClientToAPlainServerFailClearly() async throws {
        let (plainServer, plainPort) = try await startServer(echoModel())
        do {
            _ = try await ChatClient.connect(url: "wss://127.0.0.1:\(plainPort)", tls: ClientTLS(verify: false),
                                             events: ChatClient.Events(), timeout: .seconds(5))
            XCTFail("TLS to a plain server connected")
        } catch {
            XCTAssertTrue("\(error)".contains("TLS with 127.0.0.1:\(plainPort) failed"), "\(error)")
        }
        try await plainServer.stop()

        let (tlsServer, tlsPort) = try await startTLSServer(try ServerTLS.selfSigned(hosts: []), log: LogLines())
        do {
            _ = try await ChatClient.connect(url: "ws://127.0.0.1:\(tlsPort)", events: ChatClient.Events(), timeout: .seconds(5))
            XCTFail("plain websocket to a TLS server connected")
        } catch {
            XCTAssertTrue("\(error)".contains("400"), "\(error)")
        }
        try await tlsServer.stop()
    }

    func testAPortInUseIsAClearError() async throws {
        let (server, port) = try await startServer(echoModel())
        do {
            _ = try await startServer(echoModel()) { $0.port = port }
            XCTFail("bound a port in use")
        } catch {
            XCTAssertTrue("\(error)".contains("127.0.0.1:\(port)") && "\(error)".contains("already in use"), "\(error)")
        }
        try await server.stop()
    }
}
