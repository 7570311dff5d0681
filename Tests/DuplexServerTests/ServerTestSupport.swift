import Atomics
import DuplexEngine
@testable import DuplexServer
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A voiced, speech-like test tone: harmonics of a gliding pitch under a 3 Hz syllable envelope.
func speechLike(_ count: Int, offset: Int = 0) -> [Float] {
    var phase: Float = 0
    return (0..<(offset + count)).map { i in
        let t = Float(i) / 24_000
        let f0 = 140 + 40 * sinf(2 * .pi * 0.7 * t)
        phase += 2 * .pi * f0 / 24_000
        if phase > 2 * .pi { phase -= 2 * .pi }
        var s: Float = 0
        for h in 1...6 { s += sinf(phase * Float(h)) / Float(h) }
        let syllables = 0.55 + 0.45 * sinf(2 * .pi * 3 * t)
        return 0.2 * s * syllables
    }.suffix(count).map { $0 }
}

/// One Ogg page with a correct CRC (polynomial 0x04C11DB7, as RFC 3533 specifies).
func oggPage(body: [UInt8], bos: Bool, serial: UInt8 = 7, sequence: UInt8 = 0) -> [UInt8] {
    var page: [UInt8] = Array("OggS".utf8) + [0, bos ? 2 : 0] + Array(repeating: 0, count: 8)
    page += [serial, 0, 0, 0] + [sequence, 0, 0, 0] + [0, 0, 0, 0]  // serial, sequence, CRC placeholder
    var lacing: [UInt8] = []
    var left = body.count
    repeat { lacing.append(UInt8(min(255, left))); left -= 255 } while left >= 0
    page.append(UInt8(lacing.count))
    page += lacing + body
    var crc: UInt32 = 0
    for byte in page {
        crc ^= UInt32(byte) << 24
        for _ in 0..<8 { crc = crc & 0x8000_0000 != 0 ? (crc << 1) ^ 0x04C1_1DB7 : crc << 1 }
    }
    for i in 0..<4 { page[22 + i] = UInt8((crc >> (8 * UInt32(i))) & 0xFF) }
    return page
}

/// The test stand-in for a Session: plays back the previous input frame (one frame of delay, like
/// Moshi's acoustic delay) and emits text token `frame index` every `textEvery` frames.
final class EchoProcessor: FrameProcessor {
    static let live = ManagedAtomic<Int>(0)
    let frameSize = 1920
    let textEvery: Int
    private var previous = [Float](repeating: 0, count: 1920)
    private var frame: Int32 = 0

    init(textEvery: Int = 5) {
        self.textEvery = textEvery
        Self.live.wrappingIncrement(ordering: .relaxed)
    }

    deinit { Self.live.wrappingDecrement(ordering: .relaxed) }

    func process(_ input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                 stamps: inout FrameTimestamps, clock: any FrameClock) -> Int32? {
        previous.withUnsafeBufferPointer { output.update(from: $0.baseAddress!, count: frameSize) }
        previous.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: input, count: frameSize) }
        stamps.encoded = clock.now()
        stamps.temporalDone = stamps.encoded
        stamps.lmDone = stamps.encoded
        stamps.decoded = clock.now()
        defer { frame += 1 }
        return textEvery > 0 && frame % Int32(textEvery) == textEvery - 1 ? frame : nil
    }
}

/// Records what the factory was asked for.
final class ParameterLog: @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [SessionParameters] = []
    func append(_ p: SessionParameters) { lock.lock(); seen.append(p); lock.unlock() }
    var all: [SessionParameters] { lock.lock(); defer { lock.unlock() }; return seen }
}

func echoModel(textEvery: Int = 5, textBytes: Int = 0, log: ParameterLog? = nil) -> ChatModel {
    ChatModel(
        makeSession: { parameters in
            log?.append(parameters)
            return EchoProcessor(textEvery: textEvery)
        },
        tokenText: { token in
            textBytes > 0 ? String(repeating: "x", count: textBytes) : " w\(token)"
        })
}

func startServer(_ model: ChatModel, _ configure: (inout ChatServer.Configuration) -> Void = { _ in }) async throws -> (ChatServer, Int) {
    var config = ChatServer.Configuration()
    config.port = 0
    configure(&config)
    let server = ChatServer(model: model, configuration: config)
    try await server.start()
    guard let port = server.port else { throw ChatServerError("no port") }
    return (server, port)
}

/// Polls `condition` until it holds or `seconds` pass.
func eventually(_ seconds: Double = 5, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(nanoseconds: 10_000_000)
    }
    return condition()
}

/// Fails the test when `condition` does not come true within `seconds`.
func expectEventually(_ what: String, seconds: Double = 5, file: StaticString = #filePath, line: UInt = #line,
                      _ condition: () -> Bool) async {
    if await !eventually(seconds, condition) { XCTFail("timed out waiting for: \(what)", file: file, line: line) }
}

/// Resident set size of this process in bytes.
func residentBytes() -> Int {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = statm.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// Speech-like frames encoded as a client would (one Ogg Opus stream, one message per frame).
func encodedFrames(_ count: Int) throws -> [[UInt8]] {
    let writer = try OggOpusWriter()
    let pcm = speechLike(1920 * count)
    return (0..<count).map { f in writer.append(Array(pcm[(f * 1920)..<((f + 1) * 1920)])) }
}
