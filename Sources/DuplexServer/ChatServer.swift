import Atomics
import DuplexEngine
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// `duplex serve`: Kyutai's chat protocol at `/api/chat` (websocket), plus `/healthz` and a
/// Prometheus `/metrics`, on swift-nio. Each connection gets its own session (processor) over the
/// shared model; the model work runs on a per-session queue, never on an event loop.
public final class ChatServer: Sendable {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        /// 0 picks a free port (tests); read it back from `port` after `start()`.
        public var port = 8998
        /// Conversations admitted at once; the next client gets a kind-5 error and a close (1013).
        public var maxSessions = 1
        /// When set, clients must present it (`?token=`, `?worker_auth_id=` or `Authorization: Bearer`).
        public var token: String?
        /// Sampling settings a client's query parameters may override.
        public var defaults = SessionParameters()
        /// Largest websocket message accepted (all fragments together); larger closes with 1009.
        /// An 80 ms Opus frame is a few hundred bytes, so 1 MiB is generous.
        public var maxMessageBytes = 1 << 20
        /// Bytes written to a client that stopped reading before it is disconnected (beyond what
        /// the kernel and the channel's high-water mark already hold).
        public var maxOutboundBacklogBytes = 1 << 20
        public var writeBufferLowWaterMark = 64 << 10
        public var writeBufferHighWaterMark = 256 << 10
        /// SO_SNDBUF for client sockets (nil: the kernel's auto-tuning). Tests shrink it so a
        /// client that does not read is noticed in milliseconds rather than megabytes.
        public var socketSendBufferBytes: Int?
        var workerLimits = SessionWorker.Limits()
        /// Input frames allowed to wait for the model before the oldest are dropped (4 s).
        public var maxInputBacklogFrames: Int {
            get { workerLimits.maxBacklogFrames }
            set { workerLimits.maxBacklogFrames = newValue }
        }
        /// Undecoded input bytes allowed to wait; more closes the connection (1008).
        public var maxInboxBytes: Int {
            get { workerLimits.maxInboxBytes }
            set { workerLimits.maxInboxBytes = newValue }
        }
        /// TLS in front of everything (`--tls-cert/--tls-key`, `--tls-self-signed`); nil: plain TCP.
        public var tls: ServerTLS?
        /// What other paths answer with (ServerTLS.swift, StaticSite.swift).
        public var staticSite = StaticSite.builtIn
        /// Seconds a drain lets running conversations go on before closing them (1001).
        public var drainTimeout: Double = 300
        /// Authorises `POST /admin/drain` (else `token` does; with neither the endpoint answers 403).
        public var adminToken: String?
        /// Where the server's own lines go: one per refused TLS connection (plain HTTP, garbage, a
        /// failed handshake), the drain's start and end.
        public var log: @Sendable (String) -> Void = { _ in }
        public init() {}
    }

    /// What every connection's handlers share.
    final class Shared: Sendable {
        let model: ChatModel
        let configuration: Configuration
        let metrics: ServerMetrics
        let drain = DrainController()

        init(model: ChatModel, configuration: Configuration) {
            self.model = model
            self.configuration = configuration
            metrics = ServerMetrics(frameNanoseconds: UInt64(model.frameSize) * 1_000_000_000 / UInt64(model.sampleRate))
        }

        /// Takes a session slot if one is free (the active-session gauge is the slot count).
        func acquireSlot() -> Bool {
            let active = metrics.sessionsActive
            var current = active.load(ordering: .relaxed)
            while current < configuration.maxSessions {
                let (exchanged, original) = active.weakCompareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
                if exchanged { return true }
                current = original
            }
            return false
        }

        func releaseSlot() { metrics.sessionsActive.wrappingDecrement(ordering: .acquiringAndReleasing) }

        /// Whether the request carries the token (when one is required). Constant time in the token.
        func authorized(_ head: HTTPRequestHead) -> Bool {
            guard let token = configuration.token else { return true }
            var presented: [String] = queryItems(head.uri).filter { $0.name == "token" || $0.name == "worker_auth_id" }.map(\.value)
            for value in head.headers["Authorization"] where value.lowercased().hasPrefix("bearer ") {
                presented.append(String(value.dropFirst(7)).trimmingCharacters(in: .whitespaces))
            }
            return presented.contains { constantTimeEqual(Array($0.utf8), Array(token.utf8)) }
        }
    }

    let shared: Shared
    private let group: any EventLoopGroup
    private let ownsGroup: Bool
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)
    private let stopped = NIOLockedValueBox(false)

    public var metrics: ServerMetrics { shared.metrics }
    public var configuration: Configuration { shared.configuration }

    /// The port the server listens on (the real one when `port` was 0); nil before `start()`.
    public var port: Int? { channel.withLockedValue { $0?.localAddress?.port } }

    public init(model: ChatModel, configuration: Configuration, group: (any EventLoopGroup)? = nil) {
        shared = Shared(model: model, configuration: configuration)
        if let group {
            self.group = group
            ownsGroup = false
        } else {
            self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, min(4, System.coreCount)))
            ownsGroup = true
        }
        shared.drain.setTrigger { [weak self] reason in self?.drain(reason: reason) ?? false }
    }

    /// Binds and starts accepting connections. Throws with the address when binding fails.
    public func start() async throws {
        let shared = self.shared
        let config = shared.configuration
        var bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark,
                                value: .init(low: config.writeBufferLowWaterMark, high: config.writeBufferHighWaterMark))
        if let size = config.socketSendBufferBytes {
            bootstrap = bootstrap.childChannelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(size))
        }
        bootstrap = bootstrap.childChannelInitializer { channel in
            let upgrader = NIOWebSocketServerUpgrader(
                maxFrameSize: config.maxMessageBytes,
                automaticErrorHandling: true,
                shouldUpgrade: { channel, head in
                    // While draining the upgrade is declined and HTTPRoutes answers 503 (a balancer may retry elsewhere).
                    let ok = path(head.uri) == "/api/chat" && shared.authorized(head) && !shared.drain.isDraining
                    return channel.eventLoop.makeSucceededFuture(ok ? HTTPHeaders() : nil)
                },
                upgradePipelineHandler: { channel, head in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ChatSessionHandler(shared: shared, query: queryItems(head.uri)))
                    }
                })
            return channel.eventLoop.makeCompletedFuture {
                if let tls = config.tls { try ChatServer.addTLSHandlers(tls, to: channel, log: config.log) }
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                    withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                        context.pipeline.syncOperations.removeHandler(name: HTTPRoutes.name, promise: nil)
                    }))
                try channel.pipeline.syncOperations.addHandler(HTTPRoutes(shared: shared), name: HTTPRoutes.name)
            }
        }
        do {
            let bound = try await bootstrap.bind(host: config.host, port: config.port).get()
            channel.withLockedValue { $0 = bound }
        } catch {
            throw ChatServer.bindFailure(error, host: config.host, port: config.port)
        }
    }

    /// Stops listening; with its own event loops (no `group` given) also closes every connection,
    /// ending their sessions. Idempotent.
    public func stop() async throws {
        let first = stopped.withLockedValue { s -> Bool in defer { s = true }; return !s }
        guard first else { return }
        let bound = channel.withLockedValue { c -> (any Channel)? in defer { c = nil }; return c }
        try? await bound?.close()
        if ownsGroup { try await group.shutdownGracefully() }
    }

    /// Blocks until the listening channel closes (`duplex serve` runs until it is killed).
    public func waitUntilClosed() async throws {
        let bound = channel.withLockedValue { $0 }
        try await bound?.closeFuture.get()
    }
}

public struct ChatServerError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

// MARK: plain HTTP routes

/// `/healthz`, `/metrics`, and the answers for requests that are not a websocket upgrade.
final class HTTPRoutes: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    static let name = "duplex.http-routes"

    let shared: ChatServer.Shared
    private var head: HTTPRequestHead?

    init(shared: ChatServer.Shared) { self.shared = shared }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let metrics = shared.metrics
        let max = shared.configuration.maxSessions
        switch path(head.uri) {
        case "/healthz":
            let (status, body) = health()
            reply(context, status, body, type: "application/json")
        case "/metrics":
            reply(context, .ok, metrics.render(maxSessions: max), type: "text/plain; version=0.0.4; charset=utf-8")
        case "/admin/drain":
            let (status, body) = adminDrain(head)
            reply(context, status, body, type: status == .accepted ? "application/json" : "text/plain; charset=utf-8")
        case "/api/chat":
            if !shared.authorized(head) {
                metrics.reject(.unauthorized)
                reply(context, .unauthorized, "a token is required: ?token=… or Authorization: Bearer …\n")
            } else if shared.drain.isDraining {
                metrics.reject(.draining)
                reply(context, .serviceUnavailable, "this server is draining (shutting down): connect to another one\n", retryAfter: 5)
            } else {
                reply(context, .upgradeRequired, "/api/chat speaks Kyutai's protocol over a websocket; connect with ws://\n")
            }
        default:
            if serveStatic(head, site: shared.configuration.staticSite, context: context) { return }
            reply(context, .notFound, "not found; endpoints: /api/chat (websocket), /healthz, /metrics, POST /admin/drain\n")
        }
    }

    private func reply(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ body: String, type: String = "text/plain; charset=utf-8",
                       retryAfter: Int? = nil) {
        var headers = HTTPHeaders()
        if let retryAfter { headers.add(name: "Retry-After", value: String(retryAfter)) }
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        headers.add(name: "Connection", value: "close")
        if status == .upgradeRequired { headers.add(name: "Upgrade", value: "websocket") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

// MARK: URI helpers

func path(_ uri: String) -> String {
    String(uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
}

/// Name/value pairs of a URI's query, percent-decoded (`+` is a space, as forms write it).
func queryItems(_ uri: String) -> [(name: String, value: String)] {
    let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
    guard parts.count == 2 else { return [] }
    return parts[1].split(separator: "&").map { item in
        let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        func decode(_ s: Substring) -> String {
            let plus = s.replacingOccurrences(of: "+", with: " ")
            return plus.removingPercentEncoding ?? plus
        }
        return (decode(kv[0]), kv.count > 1 ? decode(kv[1]) : "")
    }
}

func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var diff = UInt8(a.count == b.count ? 0 : 1)
    for i in 0..<b.count { diff |= (i < a.count ? a[i] : 0) ^ b[i] }
    return diff == 0
}
