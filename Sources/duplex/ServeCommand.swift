import ArgumentParser
import Dispatch
import DuplexCore
import DuplexEngine
import DuplexServer
import Foundation
import Synchronization

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve Kyutai's chat protocol at ws://HOST:PORT/api/chat (Kyutai's clients work unchanged).",
        discussion: """
            Endpoints: /api/chat (websocket), /healthz (JSON; 503 while draining or full), /metrics (Prometheus), \
            POST /admin/drain, and a web page at / (--static). --tls-cert/--tls-key or --tls-self-signed serve https:// and \
            wss:// instead. SIGTERM or the first Ctrl-C drains: new conversations are refused (HTTP 503), running \
            ones finish (up to --drain-timeout), then it exits 0; a second Ctrl-C exits at once. Each connection is its \
            own conversation over the one loaded model. Clients may choose text_temperature, text_topk, \
            audio_temperature, audio_topk, pad_mult, text_seed, audio_seed, repetition_penalty_context and \
            repetition_penalty as query parameters (as Kyutai's web client sends them); the options below \
            are the defaults for clients that do not.
            """)

    @OptionGroup var model: ModelOption

    @Option(help: "Address to listen on. Loopback by default: use 0.0.0.0 (or a LAN address) to accept other machines.")
    var host = "127.0.0.1"

    @Option(help: "TCP port.")
    var port = 8998

    @Option(help: "Conversations at once; the next client gets a kind-5 error and a close (default: as many as this machine keeps in real time, measured at start).")
    var maxSessions: Int?

    @Option(help: "A token clients must present (?token=…, ?worker_auth_id=… or Authorization: Bearer …). Also read from DUPLEX_SERVE_TOKEN.")
    var token: String?

    @Option(help: "Seconds a drain (SIGTERM, Ctrl-C, POST /admin/drain) lets running conversations go on; those still running then get a kind-5 error and close 1001.")
    var drainTimeout: Double = 300

    @Option(help: "A token for POST /admin/drain (Authorization: Bearer … or ?token=…); without it --token authorises it, and with neither the endpoint answers 403. Also read from DUPLEX_ADMIN_TOKEN.")
    var adminToken: String?

    @Option(help: "Largest websocket message accepted, in bytes (larger: close 1009).")
    var maxMessageBytes = 1 << 20

    @Option(name: .customLong("context-fill"),
            help: "Start every conversation with this many LM steps already in its context (load tests of long conversations: attention then reads a full window from the first frame).")
    var contextFill = 0

    @OptionGroup(title: "Sampling defaults (a client's query parameters override them)") var sampling: SamplingOptions

    @OptionGroup(title: "PersonaPlex (a client's voice_prompt / text_prompt query parameters override them)") var persona: PersonaOptions

    @Option(name: .customLong("voice-prompt-dir"),
            help: "PersonaPlex: where a client's voice_prompt=NAME is looked up (default: the model folder's voices/, as NVIDIA's voices.tgz unpacks).")
    var voicePromptDir: String?

    @OptionGroup(title: "HTTPS and the web page") var web: ServeWebOptions
    @OptionGroup var runtime: LMRuntimeOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        if let maxSessions, maxSessions < 1 { throw ValidationError("--max-sessions must be at least 1") }
        guard (1...65_535).contains(port) else { throw ValidationError("--port must be in 1…65535") }
        guard maxMessageBytes >= 1024 else { throw ValidationError("--max-message-bytes must be at least 1024") }
        if contextFill < 0 { throw ValidationError("--context-fill must be ≥ 0") }
        guard drainTimeout >= 0, drainTimeout.isFinite else { throw ValidationError("--drain-timeout must be a number of seconds ≥ 0") }
    }

    func run() async throws {
        compute.apply()
        let chatModel: ChatModel
        let engine: EngineModel
        let (tls, site): (ServerTLS?, StaticSite)
        do { (tls, site) = try web.load(host: host) } catch {
            warn("duplex serve: \(error)")
            throw ExitCode(2)
        }
        do {
            engine = try model.load(runtime, sampling: sampling, persona: persona)
            if voicePromptDir != nil && engine.config.kind != .personaplex {
                throw CLIError("--voice-prompt-dir is PersonaPlex's; this is a \(engine.config.kind.rawValue) model")
            }
            var personas: PersonaPrompts?
            if engine.config.kind == .personaplex {
                let folderVoices = (model.path as NSString).appendingPathComponent("voices")
                let directory = voicePromptDir ?? (FileManager.default.fileExists(atPath: folderVoices) ? folderVoices : nil)
                if let voicePromptDir, !FileManager.default.fileExists(atPath: voicePromptDir) {
                    throw CLIError("--voice-prompt-dir \(voicePromptDir) does not exist")
                }
                personas = try PersonaPrompts(engine: engine, voiceDirectory: directory)
                // The defaults are checked now, so a bad --voice-prompt fails at start, not per connection.
                _ = try personas!.prompt(voice: persona.voicePrompt, text: persona.textPrompt)
            }
            chatModel = try makeSessionFactory(engine: engine, sampling: sampling, contextFill: contextFill, personas: personas,
                                               defaultVoice: persona.voicePrompt, defaultText: persona.textPrompt)
        } catch {
            warn("duplex serve: \(error)")
            throw ExitCode(2)
        }
        var config = ChatServer.Configuration()
        config.host = host
        config.port = port
        config.token = token ?? ProcessInfo.processInfo.environment["DUPLEX_SERVE_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        config.maxMessageBytes = maxMessageBytes
        config.drainTimeout = drainTimeout
        config.adminToken = adminToken ?? ProcessInfo.processInfo.environment["DUPLEX_ADMIN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        config.log = { warn($0) }
        config.defaults = SessionParameters(textTemperature: sampling.textTemperature, textTopK: sampling.textTopK,
                                            audioTemperature: sampling.temperature, audioTopK: sampling.topK,
                                            textSeed: sampling.seed, audioSeed: sampling.seed)
        if let maxSessions {
            config.maxSessions = maxSessions
        } else {
            // Capacity must hold for a long conversation, whose attention reads a full context.
            let context = engine.config.context
            let estimate = try ServerCapacity.measure(chatModel, contextFrames: context) { processor in
                try (processor as? Session)?.fillContext(steps: context)
            }
            config.maxSessions = estimate.sessions
            warn(String(format: "duplex serve: %.1f ms per frame at a full %d-step context (%@ KV cache) → %d session%@ in real time (override with --max-sessions)",
                        estimate.frameSeconds * 1000, context, engine.kvCache.rawValue, estimate.sessions, estimate.sessions == 1 ? "" : "s"))
        }
        config.tls = tls
        config.staticSite = site
        let server = ChatServer(model: chatModel, configuration: config)
        do { try await server.start() } catch {
            warn("duplex serve: \(error)")
            throw ExitCode(2)
        }
        let shownHost = host.contains(":") ? "[\(host)]" : host
        let (ws, http) = tls == nil ? ("ws", "http") : ("wss", "https")
        let page = site == .none ? "" : ", the web page at \(http)://\(shownHost):\(server.port ?? port)/"
        warn("duplex serve: \(ws)://\(shownHost):\(server.port ?? port)/api/chat — /healthz, /metrics\(page); up to \(config.maxSessions) at once"
             + (config.token == nil ? "" : ", token required"))

        let signals = drainOnSignals(server)
        try await server.waitUntilClosed()
        signals.forEach { $0.cancel() }
        try await server.stop()
    }
}

/// SIGTERM and the first Ctrl-C drain the server (no new conversations, the running ones finish,
/// then `waitUntilClosed` returns and serve exits 0); a second Ctrl-C exits at once (status 130).
private let interrupts = Atomic<Int>(0)

private func drainOnSignals(_ server: ChatServer) -> [DispatchSourceSignal] {
    return [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler {
            if sig == SIGINT && interrupts.add(1, ordering: .relaxed).newValue > 1 {
                let active = server.metrics.activeSessions
                warn("duplex serve: second interrupt, exiting now (\(active) conversation\(active == 1 ? "" : "s") dropped)")
                // _exit, not exit: exit's atexit handlers and C++ static destructors (BoringSSL,
                // OpenBLAS) would run while the event-loop and model threads still use them, and
                // crashed the process now and then (e2e saw a segfault).
                _exit(130)
            }
            let started = server.drain(reason: sig == SIGTERM ? "SIGTERM" : "SIGINT")
            if sig == SIGINT {
                warn("duplex serve: Ctrl-C again to exit at once")
            } else if !started {
                warn("duplex serve: already draining")
            }
        }
        source.resume()
        return source
    }
}

// MARK: - model plug-in point

/// Every connection gets its own Session over the one loaded model. A client's sampling query
/// parameters override the server's defaults; `text_seed` (else `audio_seed`) seeds the session.
/// `pad_mult` and the repetition penalty are accepted but not applied: the sampler implements
/// Kyutai's PyTorch LMGen, which has neither.
func makeSessionFactory(engine: EngineModel, sampling: SamplingOptions, contextFill: Int = 0, personas: PersonaPrompts? = nil,
                        defaultVoice: String? = nil, defaultText: String? = nil) throws -> ChatModel {
    try sampling.check(engine.config)
    let base = sampling.parameters(for: engine.config)
    // No kind-4 metadata: Kyutai's Python server sends none, and its clients expect the handshake
    // to be the first message.
    return ChatModel(frameSize: engine.frameSize, sampleRate: 24_000, metadataJSON: nil,
                     makeSession: { parameters in
                         var p = base
                         if let v = parameters.textTemperature { p.textTemperature = v }
                         if let v = parameters.textTopK { p.textTopK = v }
                         if let v = parameters.audioTemperature { p.audioTemperature = v }
                         if let v = parameters.audioTopK { p.audioTopK = v }
                         if let v = parameters.textSeed ?? parameters.audioSeed { p.seed = v }
                         // PersonaPlex: the client's voice (a name in the voice directory) and role, else the server's.
                         var prompt: PersonaPlexPrompt?
                         if let personas {
                             prompt = try parameters.voicePrompt != nil
                                 ? personas.prompt(voice: parameters.voicePrompt, text: parameters.textPrompt ?? defaultText, fromDirectory: true)
                                 : personas.prompt(voice: defaultVoice, text: parameters.textPrompt ?? defaultText)
                         } else if parameters.voicePrompt != nil || parameters.textPrompt != nil {
                             throw ModelError("voice_prompt and text_prompt are PersonaPlex's; this server runs a \(engine.config.kind.rawValue) model")
                         }
                         let session = engine.makeSession(sampling: p, firstFrame: sampling.firstFrameRule, prompt: prompt)
                         if let failure = session.failure { throw failure }
                         try session.fillContext(steps: contextFill)
                         return session
                     },
                     tokenText: { engine.displayText($0) })
}

struct ServeError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
