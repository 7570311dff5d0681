@testable import DuplexServer
import Foundation
import XCTest

/// The server in-process on 127.0.0.1 (ephemeral port) with `EchoProcessor` standing in for the
/// model, talked to by `RawWebSocket`, which does exactly what each test says on the wire.
final class ChatServerTests: XCTestCase {
    func testHandshakeFirstThenOneFrameOutPerFrameInAndText() async throws {
        let (server, port) = try await startServer(echoModel(textEvery: 5))
        let ws = try RawWebSocket(port: port)
        XCTAssertEqual(try ws.upgrade().status, 101)
        XCTAssertEqual(ws.next(), .message(.serverHandshake), "the handshake is the first message")

        let n = 25
        for frame in try encodedFrames(n) { XCTAssertTrue(ws.send(.audio(frame))) }
        let messages = ws.collect(audioMessages: n)
        let reader = try OggOpusReader()
        var output: [Float] = []
        var texts: [String] = []
        var audioBeforeText: [Int] = []
        var audioCount = 0
        for m in messages {
            switch m {
            case .audio(let pages): output += try reader.append(pages); audioCount += 1
            case .text(let s): texts.append(s); audioBeforeText.append(audioCount)
            default: XCTFail("unexpected \(m)")
            }
        }
        XCTAssertEqual(audioCount, n, "one audio message per input frame")
        XCTAssertEqual(output.count, n * 1920, "each decodes to exactly one 80 ms frame")
        // Tokens on frames 4, 9, … (0-based), each sent right after its frame's audio.
        XCTAssertEqual(texts, [" w4", " w9", " w14", " w19"])
        XCTAssertEqual(audioBeforeText, [5, 10, 15, 20])
        XCTAssertEqual(ws.next(timeout: 1), .message(.text(" w24")), "the last frame's text follows its audio")
        XCTAssertEqual(ws.next(timeout: 0.3), .timeout, "nothing more than one frame per frame")
        XCTAssertEqual(reader.corruptPackets, 0)

        // The echo is the input delayed by one frame, through Opus twice: its envelope follows the input's.
        let input = speechLike(n * 1920)
        let inEnvelope = envelope(Array(input[0..<((n - 1) * 1920)]))
        let outEnvelope = envelope(Array(output[1920...]))
        XCTAssertGreaterThan(pearson(inEnvelope, outEnvelope), 0.8)
        XCTAssertEqual(envelope(Array(output[0..<1920])).max() ?? 1, 0, accuracy: 1e-3, "frame 0 echoes the silence before the input")

        XCTAssertEqual(server.metrics.frames, n)
        XCTAssertEqual(server.metrics.histogram(.total)?.count, n)
        ws.close()
        await expectEventually("server.metrics.activeSessions == 0") { server.metrics.activeSessions == 0 }
        try await server.stop()
    }

    func testQueryParametersReachTheSessionOverServerDefaults() async throws {
        let log = ParameterLog()
        let (server, port) = try await startServer(echoModel(log: log)) {
            $0.defaults = SessionParameters(textTemperature: 0.7, textTopK: 25, audioTemperature: 0.8, audioTopK: 250)
        }
        let ws = try RawWebSocket(port: port)
        XCTAssertEqual(try ws.upgrade(path: "/api/chat?text_temperature=0.5&text_topk=10&audio_seed=7&email=x%40y").status, 101)
        XCTAssertEqual(ws.next(), .message(.serverHandshake))
        XCTAssertEqual(log.all, [SessionParameters(textTemperature: 0.5, textTopK: 10, audioTemperature: 0.8, audioTopK: 250, audioSeed: 7)])
        try await server.stop()
    }

    func testABadQueryParameterIsAKind5ErrorThenAClose() async throws {
        let (server, port) = try await startServer(echoModel())
        let ws = try RawWebSocket(port: port)
        XCTAssertEqual(try ws.upgrade(path: "/api/chat?text_topk=lots").status, 101)
        guard case .message(.error(let text)) = ws.next() else { return XCTFail("expected a kind-5 error") }
        XCTAssertTrue(text.contains("text_topk"), text)
        XCTAssertEqual(ws.next(), .close(1008))
        XCTAssertEqual(server.metrics.rejected(.badRequest), 1)
        XCTAssertEqual(server.metrics.activeSessions, 0)
        try await server.stop()
    }

    func testAFactoryErrorIsAKind5ErrorThenAClose() async throws {
        let model = ChatModel(makeSession: { _ in throw ChatServerError("weights missing") }, tokenText: { _ in nil })
        let (server, port) = try await startServer(model)
        let ws = try RawWebSocket(port: port)
        XCTAssertEqual(try ws.upgrade().status, 101)
        guard case .message(.error(let text)) = ws.next() else { return XCTFail("expected a kind-5 error") }
        XCTAssertTrue(text.contains("weights missing"), text)
        XCTAssertEqual(ws.next(), .close(1011))
        await expectEventually("server.metrics.activeSessions == 0") { server.metrics.activeSessions == 0 }
        try await server.stop()
    }

    func testHealthzMetricsAndOtherRoutes() async throws {
        let (server, port) = try await startServer(echoModel()) { $0.maxSessions = 3 }
        let chat = try RawWebSocket(port: port)
        _ = try chat.upgrade()
        _ = chat.next()
        for frame in try encodedFrames(3) { chat.send(.audio(frame)) }
        _ = chat.collect(audioMessages: 3)

        let health = try RawWebSocket(port: port).get("/healthz")
        XCTAssertEqual(health.status, 200)
        XCTAssertTrue(health.body.contains("\"sessions_active\":1"), health.body)
        XCTAssertTrue(health.body.contains("\"sessions_max\":3"), health.body)

        let metrics = try RawWebSocket(port: port).get("/metrics")
        XCTAssertEqual(metrics.status, 200)
        for line in ["duplex_sessions_active 1", "duplex_sessions_max 3", "duplex_sessions_total 1", "duplex_frames_total 3",
                     "duplex_underruns_total 0", "duplex_sessions_rejected_total{reason=\"capacity\"} 0",
                     "duplex_frame_stage_seconds_count{stage=\"total\"} 3", "duplex_frame_stage_seconds_bucket{stage=\"model\",le=\"+Inf\"} 3",
                     "# TYPE duplex_frame_stage_seconds histogram"] {
            XCTAssertTrue(metrics.body.contains(line + "\n") || metrics.body.contains(line + " "), "missing \(line)")
        }
        XCTAssertEqual(try RawWebSocket(port: port).get("/nope").status, 404)
        XCTAssertEqual(try RawWebSocket(port: port).get("/api/chat").status, 426, "a plain GET is told to upgrade")
        try await server.stop()
    }

    func testMaxSessionsRejectsTheNextClientWithKind5AndAClose() async throws {
        let (server, port) = try await startServer(echoModel()) { $0.maxSessions = 1 }
        let first = try RawWebSocket(port: port)
        _ = try first.upgrade()
        XCTAssertEqual(first.next(), .message(.serverHandshake))

        let second = try RawWebSocket(port: port)
        XCTAssertEqual(try second.upgrade().status, 101)
        guard case .message(.error(let text)) = second.next() else { return XCTFail("expected a kind-5 error") }
        XCTAssertTrue(text.contains("busy"), text)
        XCTAssertEqual(second.next(), .close(1013), "try again later")
        XCTAssertEqual(second.next(timeout: 2), .eof)
        XCTAssertEqual(server.metrics.rejected(.capacity), 1)

        // The first conversation is unaffected, and its end frees the slot.
        for frame in try encodedFrames(2) { first.send(.audio(frame)) }
        XCTAssertEqual(first.collect(audioMessages: 2).count, 2)
        first.close()
        await expectEventually("server.metrics.activeSessions == 0") { server.metrics.activeSessions == 0 }
        let third = try RawWebSocket(port: port)
        _ = try third.upgrade()
        XCTAssertEqual(third.next(), .message(.serverHandshake))
        try await server.stop()
    }

    func testATokenIsRequiredWhenSet() async throws {
        let (server, port) = try await startServer(echoModel()) { $0.token = "s3cret" }
        XCTAssertEqual(try RawWebSocket(port: port).upgrade().status, 401)
        XCTAssertEqual(try RawWebSocket(port: port).upgrade(path: "/api/chat?token=wrong").status, 401)
        XCTAssertEqual(try RawWebSocket(port: port).upgrade(headers: ["Authorization: Bearer nope"]).status, 401)
        for (path, headers) in [("/api/chat?token=s3cret", []), ("/api/chat?worker_auth_id=s3cret", []),
                                ("/api/chat", ["Authorization: Bearer s3cret"])] {
            let ws = try RawWebSocket(port: port)
            XCTAssertEqual(try ws.upgrade(path: path, headers: headers).status, 101, path)
            XCTAssertEqual(ws.next(), .message(.serverHandshake))
            ws.close()
            _ = await eventually { server.metrics.activeSessions == 0 }
        }
        XCTAssertEqual(server.metrics.rejected(.unauthorized), 3)
        XCTAssertEqual(try RawWebSocket(port: port).get("/healthz").status, 200, "health checks need no token")
        try await server.stop()
    }

    func testMalformedOggIsSkippedAndTheSessionGoesOn() async throws {
        let (server, port) = try await startServer(echoModel())
        let ws = try RawWebSocket(port: port)
        _ = try ws.upgrade()
        _ = ws.next()
        ws.send(.audio(Array(repeating: 0x55, count: 5000)))  // garbage before the stream
        ws.send(.audio([]))
        var frames = try encodedFrames(12)
        frames[4][frames[4].count - 10] ^= 0xFF  // a damaged page (its CRC fails: dropped)
        for f in frames[0..<6] { ws.send(.audio(f)) }
        ws.send(.audio(oggPage(body: Array(repeating: 0xFF, count: 40), bos: false, serial: 42, sequence: 99)))  // undecodable packet
        for f in frames[6...] { ws.send(.audio(f)) }
        let audio = ws.collect(audioMessages: 11, timeout: 3).filter { if case .audio = $0 { true } else { false } }
        XCTAssertEqual(audio.count, 11, "12 frames less the 40 ms page lost and the one it left incomplete")
        XCTAssertGreaterThan(server.metrics.corruptAudioPackets.load(ordering: .relaxed), 0)
        XCTAssertEqual(server.metrics.activeSessions, 1, "the session survives")
        try await server.stop()
    }

    func testAStreamThatIsNotOpusEndsTheSessionWithKind5() async throws {
        let (server, port) = try await startServer(echoModel())
        let ws = try RawWebSocket(port: port)
        _ = try ws.upgrade()
        _ = ws.next()
        ws.send(.audio(oggPage(body: Array("\u{01}vorbis".utf8) + Array(repeating: 0, count: 23), bos: true)))
        guard case .message(.error(let text)) = ws.next() else { return XCTFail("expected a kind-5 error") }
        XCTAssertTrue(text.contains("not Opus"), text)
        XCTAssertEqual(ws.next(), .close(1007))
        await expectEventually("server.metrics.activeSessions == 0") { server.metrics.activeSessions == 0 }
        XCTAssertEqual(server.metrics.closed(.badAudio), 1)
        try await server.stop()
    }

    func testOversizedMessagesCloseWith1009() async throws {
        let (server, port) = try await startServer(echoModel()) { $0.maxMessageBytes = 64 << 10; $0.maxSessions = 4 }
        // One frame over the limit: refused by the frame decoder.
        let big = try RawWebSocket(port: port)
        _ = try big.upgrade()
        _ = big.next()
        big.sendFrame(opcode: 2, payload: [1] + Array(repeating: 0, count: 100 << 10))
        XCTAssertEqual(big.next(), .close(1009))
        // Fragments each under the limit, together over it: refused when the sum passes it.
        let fragmented = try RawWebSocket(port: port)
        _ = try fragmented.upgrade()
        _ = fragmented.next()
        fragmented.sendFrame(opcode: 2, payload: [1] + Array(repeating: 0, count: 30 << 10), fin: false)
        fragmented.sendFrame(opcode: 0, payload: Array(repeating: 0, count: 30 << 10), fin: false)
        fragmented.sendFrame(opcode: 0, payload: Array(repeating: 0, count: 30 << 10), fin: true)
        guard case .message(.error(let text)) = fragmented.next() else { return XCTFail("expected a kind-5 error") }
        XCTAssertTrue(text.contains("larger than 65536"), text)
        XCTAssertEqual(fragmented.next(), .close(1009))
        await expectEventually("server.metrics.activeSessions == 0") { server.metrics.activeSessions == 0 }
        XCTAssertEqual(server.metrics.closed(.oversizedMessage), 2)

        // Fragmented audio under the limit is reassembled.
        let ok = try RawWebSocket(port: port)
        _ = try ok.upgrade()
        _ = ok.next()
        let frames = try encodedFrames(2)
        let whole = ChatMessage.audio(frames[0] + frames[1]).encoded()
        ok.sendFrame(opcode: 2, payload: Array(whole[..<10]), fin: false)
        ok.sendFrame(opcode: 0, payload: Array(whole[10...]), fin: true)
        XCTAssertEqual(ok.collect(audioMessages: 2).count, 2)
        try await server.stop()
    }

    func testTextFramesAndClientSideKindsAreIgnored() async throws {
        let (server, port) = try await startServer(echoModel(textEvery: 0))
        let ws = try RawWebSocket(port: port)
        _ = try ws.upgrade()
        _ = ws.next()
        ws.sendFrame(opcode: 1, payload: Array("hello".utf8))  // a websocket text frame
        for m: ChatMessage in [.text("hi"), .serverHandshake, .control(0), .ping, .metadata("{}"), .error("x"),
                               .unknown(kind: 0x42, payload: [1, 2, 3])] {
            ws.send(m)
        }
        ws.sendFrame(opcode: 2, payload: [])  // empty: no kind byte
        ws.sendFrame(opcode: 9, payload: [7])  // a ping is answered with a pong
        for frame in try encodedFrames(3) { ws.send(.audio(frame)) }
        let got = ws.collect(audioMessages: 3)
        XCTAssertEqual(got.count, 3, "only audio comes back: \(got.map(\.kind))")
        await expectEventually("server.metrics.ignoredMessages.load(ordering: .relaxed) == 9") { server.metrics.ignoredMessages.load(ordering: .relaxed) == 9 }
        try await server.stop()
    }

    func testAClientThatStopsReadingIsClosedWhileAnotherKeepsRealTime() async throws {
        // Every frame carries 16 KiB of text, and the buffers are small, so a client that does not
        // read fills them within a dozen frames.
        let (server, port) = try await startServer(echoModel(textEvery: 1, textBytes: 16 << 10)) {
            $0.maxSessions = 2
            $0.socketSendBufferBytes = 8 << 10
            $0.writeBufferLowWaterMark = 16 << 10
            $0.writeBufferHighWaterMark = 32 << 10
            $0.maxOutboundBacklogBytes = 128 << 10
        }
        let metrics = server.metrics
        let sleeper = try RawWebSocket(port: port, receiveBuffer: 4096)
        XCTAssertEqual(try sleeper.upgrade().status, 101)
        let live = try RawWebSocket(port: port)
        XCTAssertEqual(try live.upgrade().status, 101)
        XCTAssertEqual(live.next(), .message(.serverHandshake))
        let floodFrames = try encodedFrames(300)
        let liveFrames = try encodedFrames(25)

        nonisolated(unsafe) var floodSent = 0
        nonisolated(unsafe) var roundTrips: [Double] = []
        nonisolated(unsafe) var liveAudio = 0
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) {
            for f in floodFrames {
                if metrics.closed(.slowClient) > 0 || !sleeper.send(.audio(f)) { break }
                floodSent += 1
            }
        }
        DispatchQueue.global().async(group: group) {
            let start = Date()
            for (i, f) in liveFrames.enumerated() {
                // Real-time pacing: frame i leaves at i × 80 ms.
                let due = start.addingTimeInterval(Double(i) * 0.08)
                if due > Date() { Thread.sleep(until: due) }
                let sent = Date()
                live.send(.audio(f))
                while true {
                    guard case .message(let m) = live.next(timeout: 2) else { return }
                    if case .audio = m {
                        liveAudio += 1
                        roundTrips.append(Date().timeIntervalSince(sent))
                        break
                    }
                }
            }
        }
        await withCheckedContinuation { c in group.notify(queue: .global()) { c.resume() } }

        await expectEventually("the sleeper is disconnected") { metrics.closed(.slowClient) == 1 }
        // The sleeper finds its connection gone once it drains what the kernel still held for it.
        var last = RawWebSocket.Event.timeout
        for _ in 0..<10_000 {
            last = sleeper.next(timeout: 2)
            if case .message = last { continue }
            break
        }
        XCTAssertEqual(last, .eof, "after \(floodSent) frames sent")
        XCTAssertEqual(liveAudio, 25, "the live session got every frame back")
        let sorted = roundTrips.sorted()
        XCTAssertLessThan(sorted[sorted.count / 2], 0.04, "median round trip well inside a frame: \(sorted)")
        XCTAssertLessThan(sorted.last ?? 1, 0.16, "no response later than two frames: \(sorted)")
        XCTAssertEqual(metrics.activeSessions, 1, "only the live session remains")
        try await server.stop()
    }

    func testHundredConnectDisconnectCyclesLeakNothing() async throws {
        let (server, port) = try await startServer(echoModel()) { $0.maxSessions = 2 }
        let frames = try encodedFrames(2)  // each connection is a new stream, so the same bytes serve all
        func cycle(_ i: Int) throws {
            let ws = try RawWebSocket(port: port)
            XCTAssertEqual(try ws.upgrade().status, 101)
            XCTAssertEqual(ws.next(), .message(.serverHandshake))
            for f in frames { ws.send(.audio(f)) }
            XCTAssertEqual(ws.collect(audioMessages: 2).count, 2)
            switch i % 3 {
            case 0: ws.close()  // vanish without a close frame
            case 1:
                ws.sendFrame(opcode: 8, payload: [0x03, 0xE8])  // a normal close, answered in kind
                XCTAssertEqual(ws.next(), .close(1000))
            default:
                for f in frames { ws.send(.audio(f)) }  // leave with frames in flight
                ws.close()
            }
        }
        for i in 0..<20 { try cycle(i) }
        await expectEventually("server.metrics.activeSessions == 0 && EchoProcessor.live.load(ordering: .relaxed) == 0") { server.metrics.activeSessions == 0 && EchoProcessor.live.load(ordering: .relaxed) == 0 }
        let before = residentBytes()
        for i in 0..<100 { try cycle(i) }
        await expectEventually("no session slot leaked") { server.metrics.activeSessions == 0 }
        await expectEventually("every processor released") { EchoProcessor.live.load(ordering: .relaxed) == 0 }
        let growth = residentBytes() - before
        XCTAssertLessThan(growth, 16 << 20, "resident memory grew by \(growth >> 10) KiB over 100 cycles")
        XCTAssertEqual(server.metrics.acceptedSessions, 120)
        try await server.stop()
    }

    // MARK: helpers

    private func envelope(_ x: [Float]) -> [Double] {
        stride(from: 0, to: x.count - 479, by: 480).map { start in
            (x[start..<(start + 480)].reduce(0.0) { $0 + Double($1 * $1) } / 480).squareRoot()
        }
    }

    private func pearson(_ a: [Double], _ b: [Double]) -> Double {
        let n = min(a.count, b.count)
        let ma = a.prefix(n).reduce(0, +) / Double(n), mb = b.prefix(n).reduce(0, +) / Double(n)
        var ab = 0.0, aa = 0.0, bb = 0.0
        for i in 0..<n { ab += (a[i] - ma) * (b[i] - mb); aa += (a[i] - ma) * (a[i] - ma); bb += (b[i] - mb) * (b[i] - mb) }
        return ab / max(1e-12, (aa * bb).squareRoot())
    }
}
