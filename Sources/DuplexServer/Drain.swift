import Atomics
import DuplexEngine
import Foundation
import NIOConcurrencyHelpers
import NIOHTTP1

/// Graceful drain: stop admitting conversations, let the running ones finish for up to the drain
/// timeout, close whatever is left (kind 5, then close 1001 "going away"), then stop the server.
/// Started by `ChatServer.drain(reason:)` (SIGTERM, the first SIGINT) or `POST /admin/drain`.
final class DrainController: Sendable {
    /// How a conversation that is still running at the timeout is ended, on its own event loop.
    typealias Closer = @Sendable (_ message: String, _ code: UInt16) -> Void

    private let started = ManagedAtomic<Bool>(false)
    private let nextID = ManagedAtomic<Int>(0)
    /// Admitted conversations that have not ended, by registration id.
    private let open = NIOLockedValueBox<[Int: Closer]>([:])
    private let report = NIOLockedValueBox<ChatServer.DrainReport?>(nil)
    private let finished = NIOLockedValueBox<[CheckedContinuation<ChatServer.DrainReport, Never>]>([])
    /// Starts the server's drain (set by `ChatServer`; `POST /admin/drain` pulls it).
    private let trigger = NIOLockedValueBox<(@Sendable (String) -> Bool)?>(nil)

    func setTrigger(_ t: @escaping @Sendable (String) -> Bool) { trigger.withLockedValue { $0 = t } }
    func request(reason: String) -> Bool { trigger.withLockedValue { $0 }?(reason) ?? false }

    var isDraining: Bool { started.load(ordering: .acquiring) }
    var result: ChatServer.DrainReport? { report.withLockedValue { $0 } }

    /// Registers an admitted conversation; returns the id to `unregister` with when it ends.
    func register(_ closer: @escaping Closer) -> Int {
        let id = nextID.loadThenWrappingIncrement(ordering: .relaxed)
        open.withLockedValue { $0[id] = closer }
        return id
    }

    func unregister(_ id: Int) { _ = open.withLockedValue { $0.removeValue(forKey: id) } }

    /// Marks the server draining; true only for the call that did (a drain starts once).
    func begin() -> Bool { started.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged }

    /// Ends every registered conversation with `message` (kind 5) and a close with `code`; returns how many.
    func closeAll(message: String, code: UInt16) -> Int {
        let closers = open.withLockedValue { o -> [Closer] in defer { o.removeAll() }; return Array(o.values) }
        for close in closers { close(message, code) }
        return closers.count
    }

    func finish(_ r: ChatServer.DrainReport) {
        report.withLockedValue { $0 = r }
        let waiters = finished.withLockedValue { w -> [CheckedContinuation<ChatServer.DrainReport, Never>] in defer { w.removeAll() }; return w }
        for w in waiters { w.resume(returning: r) }
    }

    /// Waits for the drain's report (returns at once when it is done).
    func wait() async -> ChatServer.DrainReport {
        await withCheckedContinuation { c in
            let done: ChatServer.DrainReport? = finished.withLockedValue { w in
                if let r = report.withLockedValue({ $0 }) { return r }
                w.append(c)
                return nil
            }
            if let done { c.resume(returning: done) }
        }
    }
}

extension ChatServer {
    /// What a drain did: conversations that ended by themselves while it waited, and those it cut.
    public struct DrainReport: Sendable, CustomStringConvertible {
        public var reason: String
        public var seconds: Double
        /// Conversations running when the drain began (or admitted in the instant it began) that ended by themselves.
        public var finished: Int
        /// Conversations still running at the drain timeout, closed with kind 5 and 1001.
        public var cut: Int
        /// Conversations this server accepted since it started.
        public var servedSinceStart: Int

        public var description: String {
            String(format: "drain (%@) done in %.1f s: %d conversation%@ finished, %d cut at the drain timeout; %d served since start",
                   reason, seconds, finished, finished == 1 ? "" : "s", cut, servedSinceStart)
        }
    }

    /// Whether the server is draining (refusing new conversations).
    public var isDraining: Bool { shared.drain.isDraining }

    /// Starts a graceful drain (idempotent; false when one is already under way): new websocket
    /// upgrades get HTTP 503 with Retry-After, `/healthz` answers 503, running conversations go on
    /// for up to `drainTimeout` seconds, those still running then get kind 5 and close 1001, and
    /// the server stops (`waitUntilClosed()` returns). Logs a line as it starts and as it ends.
    @discardableResult
    public func drain(reason: String) -> Bool {
        guard shared.drain.begin() else { return false }
        let shared = self.shared
        let metrics = shared.metrics
        let timeout = max(0, shared.configuration.drainTimeout)
        let activeAtStart = metrics.activeSessions
        let acceptedAtStart = metrics.acceptedSessions
        metrics.drainingGauge.store(1, ordering: .relaxed)
        shared.configuration.log(String(format: "duplex serve: draining (%@): refusing new conversations, %d running, waiting up to %.0f s for them",
                                        reason, activeAtStart, timeout))
        let begun = Date()
        Task {
            let deadline = begun.addingTimeInterval(timeout)
            while metrics.activeSessions > 0 && Date() < deadline {
                try? await Task.sleep(nanoseconds: 50_000_000)
            }
            var cut = 0
            if metrics.activeSessions > 0 {
                cut = shared.drain.closeAll(message: "server shutting down: the drain timeout (\(Int(timeout)) s) passed", code: 1001)
                metrics.drainCut.wrappingIncrement(by: cut, ordering: .relaxed)
                // Let the closing handshakes complete (a client that does not answer is dropped after closeGrace).
                try? await Task.sleep(nanoseconds: 1_200_000_000)
            }
            let admitted = metrics.acceptedSessions - acceptedAtStart
            let report = DrainReport(reason: reason, seconds: Date().timeIntervalSince(begun), finished: max(0, activeAtStart + admitted - cut),
                                     cut: cut, servedSinceStart: metrics.acceptedSessions)
            shared.configuration.log("duplex serve: \(report)")
            try? await self.stop()
            shared.drain.finish(report)
        }
        return true
    }

    /// Waits until a drain has finished and returns its report.
    public func waitForDrain() async -> DrainReport { await shared.drain.wait() }
}

// MARK: POST /admin/drain

extension HTTPRoutes {
    /// `POST /admin/drain`: authorised by `--admin-token`, else by `--token`; with neither configured
    /// it is disabled (403), so an open server cannot be drained by anyone who reaches it.
    func adminDrain(_ head: HTTPRequestHead) -> (HTTPResponseStatus, String) {
        guard head.method == .POST else { return (.methodNotAllowed, "POST /admin/drain starts a graceful drain\n") }
        guard let token = shared.configuration.adminToken ?? shared.configuration.token else {
            return (.forbidden, "draining over HTTP is disabled: start the server with --admin-token (or --token), or send it SIGTERM\n")
        }
        guard Self.presents(head, token) else {
            return (.unauthorized, "POST /admin/drain needs the admin token: Authorization: Bearer … or ?token=…\n")
        }
        let started = shared.drain.request(reason: "POST /admin/drain")
        let object: [String: Any] = ["draining": true, "already_draining": !started, "sessions_active": shared.metrics.activeSessions,
                                     "drain_timeout_seconds": shared.configuration.drainTimeout]
        return (.accepted, ((try? JSONOutput.line(object)) ?? "{}") + "\n")
    }

    /// Whether `?token=` or `Authorization: Bearer` carries `token` (constant time in it).
    static func presents(_ head: HTTPRequestHead, _ token: String) -> Bool {
        var presented = queryItems(head.uri).filter { $0.name == "token" }.map(\.value)
        for value in head.headers["Authorization"] where value.lowercased().hasPrefix("bearer ") {
            presented.append(String(value.dropFirst(7)).trimmingCharacters(in: .whitespaces))
        }
        return presented.contains { constantTimeEqual(Array($0.utf8), Array(token.utf8)) }
    }

    /// `/healthz`: 200 while new conversations are admitted; 503 while draining or when every
    /// session slot is taken, so a balancer routes around the instance.
    func health() -> (HTTPResponseStatus, String) {
        let max = shared.configuration.maxSessions
        let active = shared.metrics.activeSessions
        let draining = shared.drain.isDraining
        let full = active >= max
        let object: [String: Any] = ["status": draining ? "draining" : full ? "full" : "ok", "sessions_active": active,
                                     "sessions_max": max, "accepting": !draining && !full, "draining": draining]
        return (draining || full ? .serviceUnavailable : .ok, ((try? JSONOutput.line(object)) ?? "{}") + "\n")
    }
}
