@testable import DuplexServer
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The web page and `--static DIR`: content types, HEAD, 404s, no listings, and every path
/// traversal variant refused without ever returning the file placed outside the folder.
final class StaticSiteTests: XCTestCase {
    private var base: URL!
    private var site: URL!
    private static let secret = "TOP-SECRET-OUTSIDE-THE-FOLDER"

    override func setUpWithError() throws {
        let fm = FileManager.default
        base = fm.temporaryDirectory.appendingPathComponent("duplex-static-\(UUID().uuidString)")
        site = base.appendingPathComponent("site")
        try fm.createDirectory(at: site.appendingPathComponent("sub"), withIntermediateDirectories: true)
        try fm.createDirectory(at: site.appendingPathComponent("emptydir"), withIntermediateDirectories: true)
        try fm.createDirectory(at: base.appendingPathComponent("outside"), withIntermediateDirectories: true)
        func put(_ path: String, _ text: String) throws { try text.write(to: site.appendingPathComponent(path), atomically: true, encoding: .utf8) }
        try put("index.html", "<h1>home</h1>")
        try put("app.js", "console.log(1)")
        try put("module.mjs", "export {}")
        try put("style.css", "body{}")
        try put("decoder.wasm", "\0asm")
        try put("logo.svg", "<svg/>")
        try put("p.png", "PNG")
        try put("d.json", "{}")
        try put("favicon.ico", "ICO")
        try put("blob.bin", "BIN")
        try put("sub/index.html", "<h1>sub</h1>")
        try put(".hidden", "hidden")
        try Self.secret.write(to: base.appendingPathComponent("secret.txt"), atomically: true, encoding: .utf8)
        try Self.secret.write(to: base.appendingPathComponent("outside/index.html"), atomically: true, encoding: .utf8)
        // Symlinks: two leading out of the folder, one staying inside.
        try fm.createSymbolicLink(atPath: site.appendingPathComponent("leak.txt").path, withDestinationPath: base.appendingPathComponent("secret.txt").path)
        try fm.createSymbolicLink(atPath: site.appendingPathComponent("up").path, withDestinationPath: "..")
        try fm.createSymbolicLink(atPath: site.appendingPathComponent("outdir").path, withDestinationPath: base.appendingPathComponent("outside").path)
        try fm.createSymbolicLink(atPath: site.appendingPathComponent("alias.js").path, withDestinationPath: "app.js")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: base)
    }

    /// One raw request (no client library normalises the path on the way); the whole response.
    private func request(_ port: Int, _ text: String) throws -> (status: Int, headers: String, body: String) {
        let ws = try RawWebSocket(port: port)
        ws.write(Array(text.utf8))
        var raw: [UInt8] = []
        while case .some(let chunk) = ws.readRaw(timeout: 5), !chunk.isEmpty { raw += chunk }
        let response = String(decoding: raw, as: UTF8.self)
        guard let split = response.range(of: "\r\n\r\n") else { return (0, "", response) }
        let head = String(response[..<split.lowerBound])
        let status = head.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } ?? 0
        return (status, head, String(response[split.upperBound...]))
    }

    private func get(_ port: Int, _ path: String, method: String = "GET") throws -> (status: Int, headers: String, body: String) {
        try request(port, "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    }

    func testAFolderServesFilesWithTheirContentTypes() async throws {
        let (server, port) = try await startServer(echoModel()) { $0.staticSite = try! StaticSite.option(self.site.path) }
        let expected = [
            "/": "text/html; charset=utf-8", "/index.html": "text/html; charset=utf-8", "/app.js": "text/javascript; charset=utf-8",
            "/module.mjs": "text/javascript; charset=utf-8", "/style.css": "text/css; charset=utf-8", "/decoder.wasm": "application/wasm",
            "/logo.svg": "image/svg+xml", "/p.png": "image/png", "/d.json": "application/json", "/favicon.ico": "image/x-icon",
            "/blob.bin": "application/octet-stream", "/alias.js": "text/javascript; charset=utf-8",
        ]
        for (path, type) in expected {
            let r = try get(port, path)
            XCTAssertEqual(r.status, 200, path)
            XCTAssertTrue(r.headers.contains("Content-Type: \(type)"), "\(path): \(r.headers)")
        }
        XCTAssertEqual(try get(port, "/").body, "<h1>home</h1>")
        XCTAssertEqual(try get(port, "/app.js?v=3").body, "console.log(1)", "the query is not part of the path")
        XCTAssertEqual(try get(port, "/sub/").body, "<h1>sub</h1>", "a directory serves its index.html")
        XCTAssertEqual(try get(port, "/sub").body, "<h1>sub</h1>")
        XCTAssertEqual(try get(port, "/%61pp.js").body, "console.log(1)", "percent-encoding is decoded once")
        XCTAssertEqual(try get(port, "/emptydir/").status, 404, "no listing")
        XCTAssertEqual(try get(port, "/missing.js").status, 404)
        // The endpoints stay what they were.
        XCTAssertEqual(try get(port, "/healthz").status, 200)
        XCTAssertTrue(try get(port, "/metrics").body.contains("duplex_sessions_active"))
        XCTAssertEqual(try get(port, "/api/chat").status, 426)
        try await server.stop()
    }

    func testHeadHasTheHeadersAndNoBodyAndOtherMethodsAre405() async throws {
        let (server, port) = try await startServer(echoModel()) { $0.staticSite = try! StaticSite.option(self.site.path) }
        let head = try get(port, "/app.js", method: "HEAD")
        XCTAssertEqual(head.status, 200)
        XCTAssertTrue(head.headers.contains("Content-Length: 14"), head.headers)
        XCTAssertTrue(head.headers.contains("Content-Type: text/javascript"), head.headers)
        XCTAssertEqual(head.body, "")
        let post = try request(port, "POST /app.js HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        XCTAssertEqual(post.status, 405)
        try await server.stop()
    }

    func testNoTraversalVariantReachesAFileOutsideTheFolder() async throws {
        let (server, port) = try await startServer(echoModel()) { $0.staticSite = try! StaticSite.option(self.site.path) }
        let attempts = [
            "/../secret.txt", "/sub/../../secret.txt", "/./../secret.txt", "/..", "/../",
            "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/.%2e/secret.txt", "/%2e./secret.txt",
            "/..%2fsecret.txt", "/..%2Fsecret.txt", "/%2e%2e%2fsecret.txt", "/sub%2f..%2f..%2fsecret.txt",
            "/%252e%252e/secret.txt", "/%252e%252e%252fsecret.txt", "/..%252fsecret.txt", "/%25252e%25252e/secret.txt",
            "/..\\secret.txt", "/..%5csecret.txt", "/%5c..%5csecret.txt",
            "/leak.txt", "/up/secret.txt", "/up/outside/index.html", "/outdir/", "/outdir/index.html", "/outdir",
            "/index.html%00.js", "/%00", "/.hidden", "/.%68idden",
            base.appendingPathComponent("secret.txt").path, "//" + base.appendingPathComponent("secret.txt").path,
            "secret.txt", "http://127.0.0.1/../secret.txt", "*", "/%", "/%zz", "/%c0%ae%c0%ae/secret.txt",
        ]
        for path in attempts {
            let r = try get(port, path)
            XCTAssertTrue([400, 404].contains(r.status), "\(path): status \(r.status)")
            XCTAssertFalse(r.body.contains(Self.secret), "\(path) leaked the file outside the folder")
        }
        // A raw NUL byte in the request line.
        let nul = try request(port, "GET /index.html\0../../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertFalse(nul.body.contains(Self.secret))
        XCTAssertNotEqual(nul.status, 200)
        // The checks themselves, without the HTTP parser in front.
        let direct = StaticSite.directory(StaticSite.realPath(site.path)!)
        for path in attempts where path.hasPrefix("/") {
            XCTAssertNotEqual(direct.answer(uri: path), .file(contentType: "text/plain; charset=utf-8", bytes: Array(Self.secret.utf8)), path)
            if case .file(_, let bytes) = direct.answer(uri: path) { XCTFail("\(path) served \(bytes.count) bytes") }
        }
        XCTAssertEqual(direct.answer(uri: "/index.html\0"), .badRequest)
        // Still serving.
        XCTAssertEqual(try get(port, "/").status, 200)
        try await server.stop()
    }

    func testTheBuiltInPageIsTheDefaultAndNoneServesNothing() async throws {
        let (server, port) = try await startServer(echoModel())
        let page = try get(port, "/")
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(page.headers.contains("Content-Type: text/html; charset=utf-8"), page.headers)
        XCTAssertEqual(Array(page.body.utf8), WebClientFiles.files["/index.html"]!.bytes)
        XCTAssertEqual(try get(port, "/index.html").status, 200)
        XCTAssertEqual(try get(port, "/", method: "HEAD").body, "")
        XCTAssertEqual(try get(port, "/../index.html").status, 404)
        XCTAssertEqual(try get(port, "/nothing.js").status, 404)
        try await server.stop()

        let (bare, barePort) = try await startServer(echoModel()) { $0.staticSite = .none }
        XCTAssertEqual(try get(barePort, "/").status, 404)
        XCTAssertEqual(try get(barePort, "/index.html").status, 404)
        XCTAssertEqual(try get(barePort, "/healthz").status, 200)
        try await bare.stop()
    }

    func testAMissingFolderIsAnErrorAtStart() throws {
        XCTAssertThrowsError(try StaticSite.option(base.appendingPathComponent("nope").path)) { error in
            XCTAssertTrue("\(error)".contains("nope") && "\(error)".contains("no such folder"), "\(error)")
        }
        XCTAssertThrowsError(try StaticSite.option(site.appendingPathComponent("app.js").path)) { error in
            XCTAssertTrue("\(error)".contains("not a folder"), "\(error)")
        }
        XCTAssertEqual(try StaticSite.option("none"), .none)
    }
}
