import Foundation
import XCTest

/// `duplex serve`'s TLS and --static options fail before the model loads: one line naming the
/// file, exit 2, nothing listening.
final class ServeTLSCommandTests: XCTestCase {
    func testABadCertificateKeyOrFolderIsOneLineNamingItAndExit2() throws {
        let dir = try cliScratch()
        let garbage = dir.appendingPathComponent("garbage-\(UUID().uuidString).pem")
        try "not a certificate\n".write(to: garbage, atomically: true, encoding: .utf8)
        var run = try runDuplex(["serve", "--port", "18990", "--tls-cert", garbage.path, "--tls-key", garbage.path])
        XCTAssertEqual(run.status, 2, run.stderr)
        XCTAssertTrue(run.stderr.contains("--tls-cert \(garbage.path): no PEM certificate"), run.stderr)
        XCTAssertFalse(run.stderr.contains("loaded"), "fails before the model loads: \(run.stderr)")

        run = try runDuplex(["serve", "--port", "18990", "--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"])
        XCTAssertEqual(run.status, 2, run.stderr)
        XCTAssertTrue(run.stderr.contains("/nonexistent/cert.pem: no such file"), run.stderr)

        run = try runDuplex(["serve", "--port", "18990", "--static", "/nonexistent/site"])
        XCTAssertEqual(run.status, 2, run.stderr)
        XCTAssertTrue(run.stderr.contains("--static /nonexistent/site: no such folder"), run.stderr)

        run = try runDuplex(["serve", "--tls-cert", garbage.path])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("--tls-cert and --tls-key go together"), run.stderr)

        run = try runDuplex(["serve", "--tls-self-signed", "--tls-cert", garbage.path, "--tls-key", garbage.path])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("--tls-self-signed"), run.stderr)

        run = try runDuplex(["talk", "--insecure", "--connect", "ws://127.0.0.1:1", "--pipe"])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.stderr.contains("--insecure is for --connect wss://"), run.stderr)
    }
}
