@testable import DuplexServer
import XCTest

final class ProtocolTests: XCTestCase {
    func testMessagesRoundTripWithTheKindByteFirst() throws {
        let messages: [ChatMessage] = [
            .serverHandshake, .audio([0x4F, 0x67, 0x67, 0x53]), .text(" héllo"), .control(ControlAction.endTurn.rawValue),
            .metadata("{\"a\":1}"), .error("busy"), .ping, .unknown(kind: 0x42, payload: [1, 2]),
        ]
        for m in messages {
            XCTAssertEqual(try ChatMessage.decode(m.encoded()), m)
        }
        XCTAssertEqual(ChatMessage.serverHandshake.encoded(), [0, 0, 0, 0, 0, 0, 0, 0, 0], "0x00 + u32 protocol + u32 model version")
        XCTAssertEqual(ChatMessage.text("hi").encoded(), [2, 0x68, 0x69])
        XCTAssertEqual(ChatMessage.error("x").encoded(), [5, 0x78])
        XCTAssertEqual(ChatMessage.ping.encoded(), [6])
    }

    func testKyutaiVariantsDecode() throws {
        // The Python server's bare handshake byte, and the versions when present.
        XCTAssertEqual(try ChatMessage.decode([0]), .handshake(protocolVersion: 0, modelVersion: 0))
        XCTAssertEqual(try ChatMessage.decode([0, 1, 0, 0, 0, 2, 0, 0, 0]), .handshake(protocolVersion: 1, modelVersion: 2))
        // Colored text (0x07) and kinds beyond are unknown here: kept for the caller to drop.
        XCTAssertEqual(try ChatMessage.decode([7, 1, 0x41]), .unknown(kind: 7, payload: [1, 0x41]))
        XCTAssertEqual(try ChatMessage.decode([200]), .unknown(kind: 200, payload: []))
    }

    func testMalformedMessagesAreErrorsNotCrashes() {
        XCTAssertThrowsError(try ChatMessage.decode([UInt8]()))
        XCTAssertThrowsError(try ChatMessage.decode([2, 0xFF, 0xFE])) { XCTAssertTrue("\($0)".contains("UTF-8")) }
        XCTAssertThrowsError(try ChatMessage.decode([3]))
    }

    func testWebClientQueryParametersAreRead() throws {
        // What Kyutai's web client sends (Conversation.tsx), plus names the server does not use.
        let uri = "/api/chat?text_temperature=0.7&text_topk=25&audio_temperature=0.8&audio_topk=250&pad_mult=0"
            + "&text_seed=12345&audio_seed=-1&repetition_penalty_context=64&repetition_penalty=1.0"
            + "&email=a%40b.c&worker_auth_id=abc&image_url=&image_resolution=224"
        let p = try SessionParameters(query: queryItems(uri))
        XCTAssertEqual(p, SessionParameters(textTemperature: 0.7, textTopK: 25, audioTemperature: 0.8, audioTopK: 250, padMult: 0,
                                            textSeed: 12345, audioSeed: UInt64(bitPattern: -1),
                                            repetitionPenaltyContext: 64, repetitionPenalty: 1.0))
        XCTAssertEqual(queryItems(uri).first { $0.name == "email" }?.value, "a@b.c")
        XCTAssertEqual(try SessionParameters(query: queryItems("/api/chat?text_topk=25.0")).textTopK, 25, "JS numbers")
        XCTAssertEqual(path(uri), "/api/chat")
    }

    func testBadQueryValuesNameTheParameter() {
        for (query, name) in [("text_topk=abc", "text_topk"), ("audio_temperature=-1", "audio_temperature"),
                              ("text_temperature=nan", "text_temperature"), ("audio_topk=2.5", "audio_topk")] {
            XCTAssertThrowsError(try SessionParameters(query: queryItems("/api/chat?" + query))) {
                XCTAssertTrue("\($0)".contains(name), "\($0)")
            }
        }
    }

    func testPersonaPlexQueryParametersAreReadAndVoiceNamesStayInTheDirectory() throws {
        // NVIDIA's client: voice_prompt names a file of the server's voice directory.
        let p = try SessionParameters(query: queryItems("/api/chat?voice_prompt=NATF0.pt&text_prompt=You%20are%20a%20wise%20teacher."))
        XCTAssertEqual(p.voicePrompt, "NATF0.pt")
        XCTAssertEqual(p.textPrompt, "You are a wise teacher.")
        for bad in ["../secret.pt", "voices/NATF0.pt", "..", ""] {
            XCTAssertThrowsError(try SessionParameters(query: [(name: "voice_prompt", value: bad)]), bad) {
                XCTAssertTrue("\($0)".contains("voice_prompt"), "\($0)")
            }
        }
        XCTAssertThrowsError(try SessionParameters(query: [(name: "text_prompt", value: String(repeating: "x", count: 20_000))]))
    }

    func testClientChoicesWinOverServerDefaults() {
        let defaults = SessionParameters(textTemperature: 0.7, textTopK: 25, audioTemperature: 0.8, audioTopK: 250)
        let merged = SessionParameters(textTopK: 10, audioSeed: 3).merged(over: defaults)
        XCTAssertEqual(merged, SessionParameters(textTemperature: 0.7, textTopK: 10, audioTemperature: 0.8, audioTopK: 250, audioSeed: 3))
    }

    func testTokenComparison() {
        XCTAssertTrue(constantTimeEqual(Array("s3cret".utf8), Array("s3cret".utf8)))
        XCTAssertFalse(constantTimeEqual(Array("s3cre".utf8), Array("s3cret".utf8)))
        XCTAssertFalse(constantTimeEqual(Array("s3cretX".utf8), Array("s3cret".utf8)))
        XCTAssertFalse(constantTimeEqual([], Array("s3cret".utf8)))
    }
}

final class CapacityTests: XCTestCase {
    func testSessionsFitInOneFrameWithHeadroom() {
        XCTAssertEqual(ServerCapacity.sessions(frameSeconds: 0.020, frameDuration: 0.080), 3)   // 0.064 / 0.020
        XCTAssertEqual(ServerCapacity.sessions(frameSeconds: 0.0639, frameDuration: 0.080), 1)
        XCTAssertEqual(ServerCapacity.sessions(frameSeconds: 0.2, frameDuration: 0.080), 1, "never less than one")
        XCTAssertEqual(ServerCapacity.sessions(frameSeconds: 0, frameDuration: 0.080), 1)
    }

    func testMeasureRunsAFreshSession() throws {
        let before = EchoProcessor.live.load(ordering: .relaxed)
        let estimate = try ServerCapacity.measure(echoModel(), frames: 4, warmup: 1)
        XCTAssertGreaterThanOrEqual(estimate.sessions, 1)
        XCTAssertGreaterThan(estimate.frameSeconds, 0)
        XCTAssertEqual(EchoProcessor.live.load(ordering: .relaxed), before, "the probe session is released")
    }
}
