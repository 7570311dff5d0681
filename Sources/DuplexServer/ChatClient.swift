import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// The client side of Kyutai's chat protocol, for `duplex talk --connect` and for tests: connects
/// to `ws://HOST:PORT/api/chat`, waits for the handshake, sends PCM frames as Ogg Opus (kind 1)
/// and reports what the server sends (decoded audio, text, errors). Works against `duplex serve`
/// and Kyutai's own servers.
public final class ChatClient: @unchecked Sendable {
    public struct Events: Sendable {
        /// Decoded PCM at 24 kHz mono, in whatever pieces the server's pages complete.
        public var audio: @Sendable ([Float]) -> Void = { _ in }
        public var text: @Sendable (String) -> Void = { _ in }
        /// A kind-5 message; the server usually closes right after.
        public var error: @Sendable (String) -> Void = { _ in }
        public var metadata: @Sendable (String) -> Void = { _ in }
        /// The connection ended, with the websocket close code when the server sent one.
        public var closed: @Sendable (UInt16?) -> Void = { _ in }
        public init() {}
    }

    private let channel: any Channel
    private let group: any EventLoopGroup
    private let ownsGroup: Bool
    private let lock = NIOLock()
    private let writer: OggOpusWriter  // guarded by lock
    public let handshake: ChatMessage

    private init(channel: any Channel, group: any EventLoopGroup, ownsGroup: Bool, writer: OggOpusWriter, handshake: ChatMessage) {
        self.channel = channel
        self.group = group
        self.ownsGroup = ownsGroup
        self.writer = writer
        self.handshake = handshake
    }

    /// Connects and waits for the server's handshake. `url` is `ws://host:port` with an optional
    /// path (default `/api/chat`, as Kyutai's client appends); sampling parameters and the token
    /// travel as query parameters, the way Kyutai's web client sends them.
    public static func connect(url: String, parameters: SessionParameters = SessionParameters(), token: String? = nil,
                               tls: ClientTLS = ClientTLS(), events: Events, timeout: TimeAmount = .seconds(30),
                               group: (any EventLoopGroup)? = nil) async throws -> ChatClient {
        let target = try Target(url: url, parameters: parameters, token: token)
        let sslContext = target.tls ? try tls.makeContext() : nil
        let ownsGroup = group == nil
        let group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let loop = group.next()
            let handshake = loop.makePromise(of: ChatMessage.self)
            let bootstrap = ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(timeout)
                .channelInitializer { channel in
                    let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 24, automaticErrorHandling: true) { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(
                                ClientHandler(reader: try OggOpusReader(), events: events, handshake: handshake))
                        }
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        if let sslContext {
                            try addTLSHandlers(context: sslContext, host: target.host, port: target.port, to: channel, failed: handshake)
                        }
                        let request = UpgradeRequest(target: target, failed: handshake)
                        // The server's first messages can share a read with its 101 response:
                        // forward those bytes to the websocket decoder instead of dropping them.
                        try channel.pipeline.syncOperations.addHTTPClientHandlers(
                            leftOverBytesStrategy: .forwardBytes,
                            withClientUpgrade: (upgraders: [upgrader], completionHandler: { context in
                                context.pipeline.syncOperations.removeHandler(name: UpgradeRequest.name, promise: nil)
                            }))
                        try channel.pipeline.syncOperations.addHandler(request, name: UpgradeRequest.name)
                    }
                }
            let channel: any Channel
            do {
                channel = try await bootstrap.connect(host: target.host, port: target.port).get()
            } catch {
                let failure = ChatServerError("cannot connect to \(target.host):\(target.port): \(error)")
                handshake.fail(failure)
                throw failure
            }
            channel.closeFuture.whenComplete { _ in handshake.fail(ChatServerError("the connection closed before the server's handshake")) }
            let timer = loop.scheduleTask(in: timeout) { handshake.fail(ChatServerError("no handshake from \(url) within \(timeout.nanoseconds / 1_000_000_000) s")) }
            let message: ChatMessage
            do {
                message = try await handshake.futureResult.get()
                timer.cancel()
            } catch {
                timer.cancel()
                try? await channel.close()
                throw error
            }
            return ChatClient(channel: channel, group: group, ownsGroup: ownsGroup, writer: try OggOpusWriter(), handshake: message)
        } catch {
            if ownsGroup { try? await group.shutdownGracefully() }
            throw error
        }
    }

    /// Encodes PCM (24 kHz mono, any count; 1920 = one frame) and sends the pages it completes as
    /// one kind-1 message. Callable from any one thread at a time; never blocks on the network.
    public func send(_ pcm: UnsafeBufferPointer<Float>) {
        let pages = lock.withLock { writer.append(pcm) }
        guard !pages.isEmpty else { return }
        send(.audio(pages))
    }

    public func send(_ pcm: [Float]) { pcm.withUnsafeBufferPointer { send($0) } }

    /// Sends one protocol message as it is (tests use this to send what a real client would not).
    public func send(_ message: ChatMessage) {
        let bytes = message.encoded()
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: buffer), promise: nil)
    }

    public var isConnected: Bool { channel.isActive }

    /// Sends a normal close and waits (briefly) for the connection to end.
    public func close() async {
        var body = channel.allocator.buffer(capacity: 2)
        body.writeInteger(UInt16(1000))
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: body)
        try? await channel.writeAndFlush(frame).get()
        let loop = channel.eventLoop
        let channel = self.channel
        let timer = loop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        try? await channel.closeFuture.get()
        timer.cancel()
        if ownsGroup { try? await group.shutdownGracefully() }
    }

    /// Waits until the connection ends (the server closed it, or `close()`).
    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()
    }
}

// MARK: pipeline pieces

private struct Target: Sendable {
    var host: String
    var port: Int
    var uri: String
    /// wss:// (or https://).
    var tls: Bool

    init(url: String, parameters: SessionParameters, token: String?) throws {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw ChatServerError("not a websocket URL: \(url) (expected ws://HOST:PORT or wss://HOST:PORT)")
        }
        guard ["ws", "http", "wss", "https"].contains(scheme) else {
            throw ChatServerError("\(scheme):// is not supported: use ws://HOST:PORT or wss://HOST:PORT")
        }
        tls = scheme == "wss" || scheme == "https"
        guard let host = components.host, !host.isEmpty else { throw ChatServerError("no host in \(url)") }
        self.host = host
        port = components.port ?? 8998
        var path = components.path.isEmpty || components.path == "/" ? "/api/chat" : components.path
        if !path.hasPrefix("/") { path = "/" + path }
        var items = components.queryItems ?? []
        func add(_ name: String, _ value: (some CustomStringConvertible)?) {
            if let value { items.append(URLQueryItem(name: name, value: value.description)) }
        }
        add("text_temperature", parameters.textTemperature)
        add("text_topk", parameters.textTopK)
        add("audio_temperature", parameters.audioTemperature)
        add("audio_topk", parameters.audioTopK)
        add("pad_mult", parameters.padMult)
        add("text_seed", parameters.textSeed)
        add("audio_seed", parameters.audioSeed)
        add("repetition_penalty_context", parameters.repetitionPenaltyContext)
        add("repetition_penalty", parameters.repetitionPenalty)
        add("voice_prompt", parameters.voicePrompt)
        add("text_prompt", parameters.textPrompt)
        add("token", token)
        var query = URLComponents()
        query.queryItems = items
        uri = path + (items.isEmpty ? "" : "?" + (query.percentEncodedQuery ?? ""))
    }
}

/// Sends the upgrade request; if the server answers with a plain HTTP response instead of
/// upgrading (401, 404, …), fails the handshake with that status.
private final class UpgradeRequest: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    static let name = "duplex.upgrade-request"

    private let target: Target
    private let failed: EventLoopPromise<ChatMessage>

    init(target: Target, failed: EventLoopPromise<ChatMessage>) {
        self.target = target
        self.failed = failed
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(target.host):\(target.port)")
        headers.add(name: "Content-Length", value: "0")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target.uri, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let response) = unwrapInboundIn(data) {
            failed.fail(ChatServerError("the server refused the websocket: HTTP \(response.status.code) \(response.status.reasonPhrase)"))
            context.close(promise: nil)
        }
    }
}

private final class ClientHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let reader: OggOpusReader
    private let events: ChatClient.Events
    private let handshake: EventLoopPromise<ChatMessage>
    private var message: [UInt8] = []
    private var inMessage = false
    private var closeCode: UInt16?

    init(reader: OggOpusReader, events: ChatClient.Events, handshake: EventLoopPromise<ChatMessage>) {
        self.reader = reader
        self.events = events
        self.handshake = handshake
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary, .continuation:
            if frame.opcode == .binary { message = []; inMessage = true }
            guard inMessage else { return }
            var data = frame.unmaskedData
            message += data.readBytes(length: data.readableBytes) ?? []
            if frame.fin {
                inMessage = false
                handle(message)
            }
        case .connectionClose:
            var data = frame.unmaskedData
            closeCode = data.readInteger(as: UInt16.self)
            var reply = context.channel.allocator.buffer(capacity: 2)
            reply.writeInteger(UInt16(1000))
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: reply)))
                .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)), promise: nil)
        default:
            break
        }
    }

    private func handle(_ bytes: [UInt8]) {
        guard let message = try? ChatMessage.decode(bytes) else { return }
        switch message {
        case .handshake: handshake.succeed(message)
        case .audio(let pages):
            if let pcm = try? reader.append(pages), !pcm.isEmpty { events.audio(pcm) }
        case .text(let s): events.text(s)
        case .error(let s):
            events.error(s)
            handshake.fail(ChatServerError("the server refused the conversation: \(s)"))
        case .metadata(let s): events.metadata(s)
        default: break  // unknown kinds are ignored, as the protocol asks
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        events.closed(closeCode)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
