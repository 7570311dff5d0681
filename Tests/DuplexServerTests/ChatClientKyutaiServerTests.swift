@testable import DuplexServer
import Foundation
import NIOConcurrencyHelpers
import XCTest

/// duplex's client against Kyutai's own server (`moshi.server`, moshi==0.2.13, tiny random model):
/// run by `tools/interop/kyutai_server.sh`, which starts that server and sets
/// DUPLEX_KYUTAI_SERVER_URL. Skipped otherwise (it needs the reference venv and torch).
final class ChatClientKyutaiServerTests: XCTestCase {
    func testPipeFedConversationWithKyutaisServer() async throws {
        guard let url = ProcessInfo.processInfo.environment["DUPLEX_KYUTAI_SERVER_URL"] else {
            throw XCTSkip("set DUPLEX_KYUTAI_SERVER_URL (tools/interop/kyutai_server.sh does)")
        }
        let samples = NIOLockedValueBox(0)
        let texts = NIOLockedValueBox<[String]>([])
        var events = ChatClient.Events()
        events.audio = { pcm in samples.withLockedValue { $0 += pcm.count } }
        events.text = { s in texts.withLockedValue { $0.append(s) } }
        let client = try await ChatClient.connect(url: url, events: events, timeout: .seconds(120))
        // Kyutai's Python server sends the bare 0x00.
        XCTAssertEqual(client.handshake, .handshake(protocolVersion: 0, modelVersion: 0))
        let frames = 25
        let pcm = speechLike(frames * 1920)
        for f in 0..<frames { client.send(Array(pcm[(f * 1920)..<((f + 1) * 1920)])) }
        // moshi.server answers from the LM's second step on (its delay of one frame): frames − 1.
        let arrived = await eventually(120) { samples.withLockedValue { $0 } >= (frames - 1) * 1920 }
        try await Task.sleep(nanoseconds: 500_000_000)
        let got = samples.withLockedValue { $0 }
        let text = texts.withLockedValue { $0 }
        print("kyutai-server: handshake=\(client.handshake) frames back=\(Double(got) / 1920) of \(frames) sent, "
              + "text pieces=\(text.count) \"\(text.joined().prefix(80))\"")
        XCTAssertTrue(arrived, "audio came back: \(got) samples")
        XCTAssertLessThanOrEqual(got, frames * 1920, "at most one frame per frame")
        await client.close()
    }
}
