import DuplexEngine
import NIOCore
import NIOWebSocket

/// One websocket conversation at `/api/chat`, on its channel's event loop: admission (parameters,
/// a session slot), message framing and limits, and the hand-offs to and from its `SessionWorker`.
/// Nothing here waits for the model.
final class ChatSessionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let shared: ChatServer.Shared
    private let query: [(name: String, value: String)]
    /// The connection's life, as swift-nio handlers keep it: one value, no combination of flags.
    private enum State {
        /// Before admission (parameters, a session slot).
        case admitting
        /// Admitted: holds a session slot; its worker runs the conversation.
        case open(SessionWorker)
        /// Our close frame is out, or the peer's close was echoed: only the closing handshake is read.
        case closing
    }
    private var state = State.admitting
    private var closing: Bool { if case .closing = state { return true } else { return false } }
    /// A message being reassembled from fragments (its opcode and bytes so far).
    private var fragments: (opcode: WebSocketOpcode, bytes: [UInt8])?
    /// Bytes written while the channel was not writable (the client is not reading fast enough).
    private var backlogBytes = 0
    /// This conversation's entry in the drain's registry (closed with 1001 at the drain timeout).
    private var drainID: Int?

    init(shared: ChatServer.Shared, query: [(name: String, value: String)]) {
        self.shared = shared
        self.query = query
    }

    // MARK: admission

    func handlerAdded(context: ChannelHandlerContext) {
        let parameters: SessionParameters
        do {
            parameters = try SessionParameters(query: query).merged(over: shared.configuration.defaults)
        } catch {
            shared.metrics.reject(.badRequest)
            fail(context: context, message: error.message, code: 1008)
            return
        }
        guard shared.acquireSlot() else {
            shared.metrics.reject(.capacity)
            let max = shared.configuration.maxSessions
            fail(context: context, message: "server busy: all \(max) conversation\(max == 1 ? "" : "s") in use, try again later", code: 1013)
            return
        }
        shared.metrics.sessionsTotal.wrappingIncrement(ordering: .relaxed)
        if let json = shared.model.metadataJSON { send(context: context, .metadata(json)) }
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let worker = SessionWorker(
            label: "duplex.session.\(shared.metrics.acceptedSessions)", model: shared.model, metrics: shared.metrics,
            limits: shared.configuration.workerLimits,
            sink: { output in loop.execute { bound.value.handler.deliver(output, context: bound.value.context) } })
        state = .open(worker)
        drainID = shared.drain.register { message, code in
            loop.execute { bound.value.handler.fail(context: bound.value.context, message: message, code: code, reason: "going away") }
        }
        worker.start(parameters: parameters)
    }

    func handlerRemoved(context: ChannelHandlerContext) { teardown() }

    func channelInactive(context: ChannelHandlerContext) {
        teardown()
        context.fireChannelInactive()
    }

    private func teardown() {
        if case .open(let worker) = state {
            worker.stop()
            shared.releaseSlot()
        }
        if let drainID {
            shared.drain.unregister(drainID)
            self.drainID = nil
        }
        state = .closing
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard !closing else {
            // Our close frame is out; the peer's answer completes the closing handshake.
            if frame.opcode == .connectionClose { context.close(promise: nil) }
            return
        }
        switch frame.opcode {
        case .connectionClose:
            // Echo the close (RFC 6455 §5.5.1) and end the connection.
            teardown()
            var body = frame.unmaskedData
            let code = body.readInteger(as: UInt16.self) ?? 1000
            var reply = context.channel.allocator.buffer(capacity: 2)
            reply.writeInteger(code == 1005 || code == 1006 ? 1000 : code)
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: reply)))
                .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .pong:
            break
        case .binary, .text:
            guard fragments == nil else {
                fail(context: context, message: "a new message began before the previous one ended", code: 1002)
                return
            }
            fragments = (frame.opcode, [])
            append(frame, context: context)
        case .continuation:
            guard fragments != nil else {
                fail(context: context, message: "continuation frame without a message to continue", code: 1002)
                return
            }
            append(frame, context: context)
        default:
            break
        }
    }

    private func append(_ frame: WebSocketFrame, context: ChannelHandlerContext) {
        guard var message = fragments else { return }
        let limit = shared.configuration.maxMessageBytes
        guard message.bytes.count + frame.length <= limit else {
            fragments = nil
            shared.metrics.close(.oversizedMessage)
            fail(context: context, message: "message larger than \(limit) bytes", code: 1009)
            return
        }
        fragments = nil  // release the array's storage so appending does not copy it
        var data = frame.unmaskedData
        if message.opcode == .binary, let bytes = data.readBytes(length: data.readableBytes) { message.bytes += bytes }
        guard frame.fin else {
            fragments = message
            return
        }
        if message.opcode == .binary {
            handle(message.bytes, context: context)
        } else {
            // The protocol is binary-only; Kyutai's server ignores text frames too.
            shared.metrics.ignoredMessages.wrappingIncrement(ordering: .relaxed)
        }
    }

    private func handle(_ bytes: [UInt8], context: ChannelHandlerContext) {
        let message: ChatMessage
        do {
            message = try ChatMessage.decode(bytes)
        } catch {
            shared.metrics.ignoredMessages.wrappingIncrement(ordering: .relaxed)
            return
        }
        guard case .audio(let payload) = message else {
            // Control (not used in full streaming), ping, client-sent text/handshake/metadata/error,
            // and unknown kinds: ignored, as the protocol asks.
            shared.metrics.ignoredMessages.wrappingIncrement(ordering: .relaxed)
            return
        }
        guard case .open(let worker) = state, !payload.isEmpty else { return }
        if !worker.enqueue(payload) {
            shared.metrics.close(.inputFlood)
            fail(context: context, message: "audio arrives much faster than real time; at most \(shared.configuration.workerLimits.maxInboxBytes) bytes may wait", code: 1008)
        }
    }

    // MARK: outbound

    private func deliver(_ output: SessionWorker.Output, context: ChannelHandlerContext) {
        guard !closing, context.channel.isActive else { return }
        switch output {
        case .ready:
            send(context: context, ChatMessage.serverHandshake)
        case .frame(let audio, let text):
            if !audio.isEmpty { send(context: context, .audio(audio), flush: text == nil) }
            if let text, !text.isEmpty {
                shared.metrics.textSent.wrappingIncrement(ordering: .relaxed)
                send(context: context, .text(text))
            }
        case .fatal(let message, let code):
            fail(context: context, message: message, code: code)
        }
    }

    private func send(context: ChannelHandlerContext, _ message: ChatMessage, flush: Bool = true) {
        guard !closing else { return }
        let bytes = message.encoded()
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        if !context.channel.isWritable {
            backlogBytes += bytes.count
            if backlogBytes > shared.configuration.maxOutboundBacklogBytes {
                // The client stopped reading: it would only fall further behind. A close frame
                // could not be read either, so end the connection now.
                shared.metrics.close(.slowClient)
                teardown()
                context.close(promise: nil)
                return
            }
        }
        let frame = WebSocketFrame(fin: true, opcode: .binary, data: buffer)
        if flush { context.writeAndFlush(wrapOutboundOut(frame), promise: nil) } else { context.write(wrapOutboundOut(frame), promise: nil) }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { backlogBytes = 0 }
        context.fireChannelWritabilityChanged()
    }

    /// Sends `message` as kind 5, then a close frame with `code`; the connection ends when the
    /// client answers the close (so it reads both first), or after `closeGrace` if it does not.
    private func fail(context: ChannelHandlerContext, message: String, code: UInt16, reason: String = "") {
        guard !closing else { return }
        send(context: context, .error(message), flush: false)
        teardown()
        var body = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        body.writeInteger(code)
        body.writeString(reason)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: body)), promise: nil)
        context.eventLoop.assumeIsolated().scheduleTask(in: Self.closeGrace) { context.close(promise: nil) }
    }

    static let closeGrace = TimeAmount.seconds(1)

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let error = error as? NIOWebSocketError, case .invalidFrameLength = error {
            shared.metrics.close(.oversizedMessage)
        }
        // NIO's WebSocketProtocolErrorHandler has already answered protocol errors with a close frame.
        teardown()
        context.close(promise: nil)
    }
}
