import DuplexAudio
import DuplexEngine
import Foundation
import Synchronization

/// A conversation whose model runs on a server (`talk --connect`), as a frame processor: the
/// live loop hands it each microphone frame on its model thread; it sends the frame (Opus, off the
/// audio threads) and answers with the next whole frame the server has sent back, or silence
/// (counted as late) when none has arrived. So a remote model runs in the same loop, with the
/// same sources, sinks, recording and failure handling as a local one.
public final class RemoteConversation: FrameProcessor, @unchecked Sendable {
    public let frameSize = 1920
    private let incoming = SPSCRing<Float>(minimumCapacity: 24_000 * 4, zero: 0)
    private let inbox = TextInbox()
    private let status = ConnectionStatus()
    private let lateFrames = Atomic<Int>(0)
    private var client: ChatClient?
    private var started = false

    public init() {}

    /// Connects and starts the conversation (the handshake done).
    public func connect(url: String, parameters: SessionParameters, token: String?, tls: ClientTLS = ClientTLS()) async throws {
        var events = ChatClient.Events()
        let incoming = self.incoming, inbox = self.inbox, status = self.status
        events.audio = { pcm in _ = pcm.withUnsafeBufferPointer { incoming.write($0.baseAddress!, count: $0.count) } }
        events.text = { inbox.push($0) }
        events.error = { message in status.error.withLock { $0 = $0 ?? message } }
        events.closed = { code in status.closeCode.store(Int(code ?? 0), ordering: .releasing) }
        client = try await ChatClient.connect(url: url, parameters: parameters, token: token, tls: tls, events: events)
    }

    public func close() async { await client?.close() }

    /// Text pieces the server sent since the last call (the UI thread).
    public func drainText() -> [String] { inbox.drain() }
    /// The close code once the server has closed the connection (0: no code), nil while open.
    public var closedWithCode: Int? { let c = status.closeCode.load(ordering: .acquiring); return c < 0 ? nil : c }
    /// The first error message (kind 5) the server sent.
    public var errorMessage: String? { status.error.withLock { $0 } }
    /// Frames that had no answer from the server in time (played as silence).
    public var late: Int { lateFrames.load(ordering: .relaxed) }

    public func process(_ input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                        stamps: inout FrameTimestamps, clock: any FrameClock) -> Int32? {
        client?.send(UnsafeBufferPointer(start: input, count: frameSize))
        stamps.encoded = clock.now()
        if incoming.availableToRead >= frameSize {
            _ = incoming.read(into: output, count: frameSize)
            started = true
        } else {
            output.update(repeating: 0, count: frameSize)
            if started { lateFrames.add(1, ordering: .relaxed) }
        }
        stamps.temporalDone = stamps.encoded
        stamps.lmDone = stamps.encoded
        stamps.decoded = clock.now()
        return nil
    }
}

/// What the network thread learns about the connection, for the UI thread.
final class ConnectionStatus: Sendable {
    let closeCode = Atomic<Int>(-1)
    let error = Mutex<String?>(nil)
}

/// Text pieces from the network thread to the UI thread (not an audio path: a lock is fine).
final class TextInbox: Sendable {
    private let pieces = Mutex<[String]>([])
    func push(_ s: String) { pieces.withLock { $0.append(s) } }
    func drain() -> [String] { pieces.withLock { p in defer { p.removeAll() }; return p } }
}
