@testable import DuplexServer
import Foundation
import NIOConcurrencyHelpers
import XCTest

/// `ChatClient` (the client side of `duplex talk --connect`) against the in-process server.
final class ChatClientTests: XCTestCase {
    private final class Received: Sendable {
        let samples = NIOLockedValueBox(0)
        let texts = NIOLockedValueBox<[String]>([])
        let errors = NIOLockedValueBox<[String]>([])
        let closeCode = NIOLockedValueBox<UInt16??>(nil)

        var events: ChatClient.Events {
            var e = ChatClient.Events()
            e.audio = { pcm in self.samples.withLockedValue { $0 += pcm.count } }
            e.text = { s in self.texts.withLockedValue { $0.append(s) } }
            e.error = { s in self.errors.withLockedValue { $0.append(s) } }
            e.closed = { code in self.closeCode.withLockedValue { $0 = .some(code) } }
            return e
        }
    }

    func testAConversationThroughTheClient() async throws {
        let log = ParameterLog()
        let (server, port) = try await startServer(echoModel(textEvery: 4, log: log))
        let received = Received()
        let client = try await ChatClient.connect(url: "ws://127.0.0.1:\(port)",
                                                  parameters: SessionParameters(textTemperature: 0.6, audioTopK: 100),
                                                  events: received.events)
        XCTAssertEqual(client.handshake, .serverHandshake)
        XCTAssertEqual(log.all, [SessionParameters(textTemperature: 0.6, audioTopK: 100)], "sampling choices travel as query parameters")
        let pcm = speechLike(12 * 1920)
        for f in 0..<12 { client.send(Array(pcm[(f * 1920)..<((f + 1) * 1920)])) }
        await expectEventually("12 frames back") { received.samples.withLockedValue { $0 } == 12 * 1920 }
        await expectEventually("3 text pieces") { received.texts.withLockedValue { $0 } == [" w3", " w7", " w11"] }
        await client.close()
        XCTAssertEqual(received.closeCode.withLockedValue { $0 }, .some(1000), "the server answers the close")
        await expectEventually("session ended") { server.metrics.activeSessions == 0 }
        try await server.stop()
    }

    func testRefusalsAreErrorsThatSayWhy() async throws {
        let (server, port) = try await startServer(echoModel()) { $0.maxSessions = 1; $0.token = "t0k" }
        let holder = try await ChatClient.connect(url: "ws://127.0.0.1:\(port)/api/chat", token: "t0k", events: .init())
        do {
            _ = try await ChatClient.connect(url: "ws://127.0.0.1:\(port)", token: "t0k", events: .init())
            XCTFail("a second conversation should be refused")
        } catch {
            XCTAssertTrue("\(error)".contains("busy"), "\(error)")
        }
        do {
            _ = try await ChatClient.connect(url: "ws://127.0.0.1:\(port)", events: .init())
            XCTFail("no token should be refused")
        } catch {
            XCTAssertTrue("\(error)".contains("401"), "\(error)")
        }
        do {
            _ = try await ChatClient.connect(url: "wss://127.0.0.1:\(port)", events: .init())
            XCTFail("wss:// to a plain server connected")
        } catch {
            XCTAssertTrue("\(error)".contains("does not speak TLS"), "\(error)")
        }
        await holder.close()
        try await server.stop()
        do {
            _ = try await ChatClient.connect(url: "ws://127.0.0.1:\(port)", events: .init(), timeout: .seconds(2))
            XCTFail("nothing listens any more")
        } catch {
            XCTAssertTrue("\(error)".contains("cannot connect"), "\(error)")
        }
    }

    func testTheServerClosingIsReported() async throws {
        let (server, port) = try await startServer(echoModel())
        let received = Received()
        let client = try await ChatClient.connect(url: "ws://127.0.0.1:\(port)", events: received.events)
        client.send(.audio(oggPage(body: Array("\u{01}vorbis".utf8) + Array(repeating: 0, count: 23), bos: true)))
        await client.waitUntilClosed()
        XCTAssertEqual(received.closeCode.withLockedValue { $0 }, .some(1007))
        XCTAssertTrue(received.errors.withLockedValue { $0 }.first?.contains("not Opus") ?? false)
        XCTAssertFalse(client.isConnected)
        await client.close()
        try await server.stop()
    }
}
