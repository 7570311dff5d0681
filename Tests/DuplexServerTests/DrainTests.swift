import DuplexEngine
@testable import DuplexServer
import XCTest

/// Graceful drain: /healthz as a balancer reads it, new conversations refused while running ones
/// finish, the drain timeout closing what is left with 1001, and who may POST /admin/drain.
final class DrainTests: XCTestCase {
    func testHealthzIs503WhenEverySlotIsTaken() async throws {
        let (server, port) = try await startServer(echoModel()) { $0.maxSessions = 1 }
        let idle = try RawWebSocket(port: port).get("/healthz")
        XCTAssertEqual(idle.status, 200)
        XCTAssertTrue(idle.body.contains("\"accepting\":true") && idle.body.contains("\"status\":\"ok\""), idle.body)

        let chat = try RawWebSocket(port: port)
        _ = try chat.upgrade()
        XCTAssertEqual(chat.next(), .message(.serverHandshake))
        let full = try RawWebSocket(port: port).get("/healthz")
        XCTAssertEqual(full.status, 503, "a full instance is routed around")
        for field in ["\"accepting\":false", "\"status\":\"full\"", "\"sessions_active\":1", "\"sessions_max\":1", "\"draining\":false"] {
            XCTAssertTrue(full.body.contains(field), "\(field) in \(full.body)")
        }
        chat.close()
        await expectEventually("a free slot") { server.metrics.activeSessions == 0 }
        XCTAssertEqual(try RawWebSocket(port: port).get("/healthz").status, 200)
        try await server.stop()
    }

    func testDrainRefusesNewConversationsAndLetsTheRunningOneFinish() async throws {
        let (server, port) = try await startServer(echoModel()) { $0.maxSessions = 4; $0.drainTimeout = 30 }
        let running = try RawWebSocket(port: port)
        _ = try running.upgrade()
        XCTAssertEqual(running.next(), .message(.serverHandshake))
        let frames = try encodedFrames(6)
        for frame in frames.prefix(3) { running.send(.audio(frame)) }
        XCTAssertEqual(running.collect(audioMessages: 3).count, 3)

        XCTAssertTrue(server.drain(reason: "test"))
        XCTAssertFalse(server.drain(reason: "again"), "a drain starts once")
        let health = try RawWebSocket(port: port).get("/healthz")
        XCTAssertEqual(health.status, 503)
        XCTAssertTrue(health.body.contains("\"status\":\"draining\"") && health.body.contains("\"accepting\":false"), health.body)
        let refused = try RawWebSocket(port: port).upgrade()
        XCTAssertEqual(refused.status, 503, "no new conversation while draining")
        XCTAssertTrue(refused.head.contains("Retry-After: 5"), refused.head)
        XCTAssertEqual(server.metrics.rejected(.draining), 1)
        let metrics = try RawWebSocket(port: port).get("/metrics").body
        XCTAssertTrue(metrics.contains("duplex_draining 1\n"), metrics)

        // The running conversation goes on as before, and its end ends the drain.
        for frame in frames.suffix(3) { running.send(.audio(frame)) }
        let tail = running.collect(audioMessages: 3).filter { if case .audio = $0 { true } else { false } }
        XCTAssertEqual(tail.count, 3)
        running.close()
        let report = await server.waitForDrain()
        XCTAssertEqual(report.finished, 1)
        XCTAssertEqual(report.cut, 0)
        XCTAssertEqual(report.servedSinceStart, 1)
        XCTAssertLessThan(report.seconds, 10)
        try await server.waitUntilClosed()
        XCTAssertThrowsError(try RawWebSocket(port: port), "the server stopped listening after the drain")
    }

    func testTheDrainTimeoutClosesRunningConversationsWith1001() async throws {
        let lines = ParameterLogLines()
        let (server, port) = try await startServer(echoModel()) {
            $0.maxSessions = 2
            $0.drainTimeout = 0.3
            $0.log = { lines.append($0) }
        }
        let chats = try (0..<2).map { _ in try RawWebSocket(port: port) }
        for chat in chats {
            _ = try chat.upgrade()
            XCTAssertEqual(chat.next(), .message(.serverHandshake))
        }
        server.drain(reason: "test")
        for chat in chats {
            guard case .message(.error(let text)) = chat.next() else { return XCTFail("expected a kind-5 error") }
            XCTAssertTrue(text.contains("shutting down"), text)
            XCTAssertEqual(chat.next(), .close(1001), "going away")
            chat.sendFrame(opcode: 8, payload: [0x03, 0xE9])  // answer the close
        }
        let report = await server.waitForDrain()
        XCTAssertEqual(report.cut, 2)
        XCTAssertEqual(report.finished, 0)
        XCTAssertEqual(server.metrics.cutAtDrainTimeout, 2)
        XCTAssertTrue(server.metrics.render(maxSessions: 2).contains("duplex_drain_cut_total 2\n"))
        XCTAssertEqual(lines.all.count, 2, "one line as the drain starts, one as it ends: \(lines.all)")
        XCTAssertTrue(lines.all.last?.contains("2 cut") == true, lines.all.joined(separator: "\n"))
        try await server.stop()
    }

    func testAdminDrainNeedsAToken() async throws {
        // No token configured: the endpoint is disabled.
        let (open, openPort) = try await startServer(echoModel())
        XCTAssertEqual(try RawWebSocket(port: openPort).request("POST", "/admin/drain").status, 403)
        XCTAssertFalse(open.isDraining)
        try await open.stop()

        // --admin-token: it, and only it, drains (the client token does not).
        let (admin, adminPort) = try await startServer(echoModel()) { $0.token = "client"; $0.adminToken = "boss" }
        XCTAssertEqual(try RawWebSocket(port: adminPort).request("POST", "/admin/drain").status, 401)
        XCTAssertEqual(try RawWebSocket(port: adminPort).request("POST", "/admin/drain", headers: ["Authorization: Bearer client"]).status, 401)
        XCTAssertEqual(try RawWebSocket(port: adminPort).request("GET", "/admin/drain?token=boss").status, 405)
        XCTAssertFalse(admin.isDraining)
        let accepted = try RawWebSocket(port: adminPort).request("POST", "/admin/drain", headers: ["Authorization: Bearer boss"])
        XCTAssertEqual(accepted.status, 202)
        XCTAssertTrue(accepted.body.contains("\"draining\":true"), accepted.body)
        XCTAssertTrue(admin.isDraining)
        let report = await admin.waitForDrain()
        XCTAssertEqual(report.reason, "POST /admin/drain")

        // Only --token: it authorises the drain too.
        let (plain, plainPort) = try await startServer(echoModel()) { $0.token = "t" }
        XCTAssertEqual(try RawWebSocket(port: plainPort).request("POST", "/admin/drain?token=t").status, 202)
        _ = await plain.waitForDrain()
    }
}

/// Collects the server's log lines.
final class ParameterLogLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}
