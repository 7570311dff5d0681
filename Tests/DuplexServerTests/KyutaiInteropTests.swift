@testable import DuplexServer
import Foundation
import XCTest

/// Kyutai's own code against the server: `tools/interop/kyutai_client.py` streams speech the way
/// `moshi.client` does (Kyutai's `sphn` for Ogg Opus both ways, an aiohttp websocket) to the
/// in-process server running the echo processor, and checks handshake, continuous audio,
/// decodability and text. Needs `tools/interop/setup.sh` (which `tools/test.sh` runs); without
/// its venv the test is skipped, unless DUPLEX_REQUIRE_INTEROP=1 (CI) makes that a failure.
final class KyutaiInteropTests: XCTestCase {
    private var root: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    private func python() throws -> URL {
        let python = root.appendingPathComponent("tools/interop/.venv/bin/python")
        guard FileManager.default.isExecutableFile(atPath: python.path) else {
            let message = "no interop venv at \(python.path): run tools/interop/setup.sh"
            if ProcessInfo.processInfo.environment["DUPLEX_REQUIRE_INTEROP"] == "1" { throw ChatServerError(message) }
            throw XCTSkip(message)
        }
        return python
    }

    private func runClient(_ arguments: [String]) async throws -> (status: Int32, summary: [String: Any], output: String) {
        let process = Process()
        process.executableURL = try python()
        process.arguments = [root.appendingPathComponent("tools/interop/kyutai_client.py").path] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        // Read on a plain thread: the client runs for seconds and must not hold a cooperative one.
        let data: Data = await withCheckedContinuation { c in
            Thread.detachNewThread { c.resume(returning: pipe.fileHandleForReading.readDataToEndOfFile()) }
        }
        process.waitUntilExit()
        let output = String(decoding: data, as: UTF8.self)
        let json = output.firstIndex(of: "{").map { String(output[$0...]) } ?? ""
        let summary = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] ?? [:]
        return (process.terminationStatus, summary, output)
    }

    func testKyutaisClientCodeTalksToTheServer() async throws {
        _ = try python()
        let log = ParameterLog()
        let (server, port) = try await startServer(echoModel(textEvery: 5, log: log))
        // The query Kyutai's web client sends (its defaults), in real time like a microphone.
        let query = "text_temperature=0.7&text_topk=25&audio_temperature=0.8&audio_topk=250&pad_mult=0"
            + "&repetition_penalty_context=64&repetition_penalty=1&text_seed=1&audio_seed=2"
        let result = try await runClient(["--url", "ws://127.0.0.1:\(port)/api/chat?\(query)", "--frames", "30",
                                          "--expect-echo", "--min-text", "5"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(result.summary["first_kind"] as? Int, 0, "handshake first")
        XCTAssertEqual(result.summary["frames_received"] as? Double, 30, "one frame back per frame: \(result.output)")
        XCTAssertEqual(result.summary["text_pieces"] as? Int, 6, result.output)
        XCTAssertGreaterThan(result.summary["echo_envelope_correlation"] as? Double ?? 0, 0.8)
        XCTAssertEqual(log.all, [SessionParameters(textTemperature: 0.7, textTopK: 25, audioTemperature: 0.8, audioTopK: 250,
                                                   padMult: 0, textSeed: 1, audioSeed: 2,
                                                   repetitionPenaltyContext: 64, repetitionPenalty: 1)])
        await expectEventually("session ended") { server.metrics.activeSessions == 0 }
        XCTAssertEqual(server.metrics.underrunCount, 0)
        try await server.stop()
    }

    func testTheClientSeesARefusal() async throws {
        _ = try python()
        let (server, port) = try await startServer(echoModel()) { $0.maxSessions = 1 }
        let holder = try RawWebSocket(port: port)
        _ = try holder.upgrade()
        XCTAssertEqual(holder.next(), .message(.serverHandshake))
        let result = try await runClient(["--url", "ws://127.0.0.1:\(port)/api/chat", "--frames", "3", "--handshake-timeout", "5"])
        XCTAssertEqual(result.status, 1, result.output)
        XCTAssertTrue(result.output.contains("no handshake") && result.output.contains("busy"), result.output)
        try await server.stop()
    }
}
