import ArgumentParser
import DuplexAudio
import DuplexCore
import DuplexEngine
import DuplexServer
import Foundation
import Synchronization

/// `talk --connect`: the same conversation with the model on a server. Audio threads only touch
/// SPSC rings; Opus encoding and the network run on a sender thread and NIO's loop.
struct RemoteTalk {
    let options: Talk
    let url: String
    let stop: StopSignal

    /// Where the conversation's audio comes from and goes to: a sound card, or stdin/stdout.
    private enum Endpoint {
        case device(ALSAAudioDevice)
        case pipes
    }

    func run() async throws {
        let frame = 1920
        let endpoint: Endpoint = options.pipe ? .pipes : .device(try ALSAAudioDevice(input: options.inputDevice, output: options.outputDevice))
        if case .device(let d) = endpoint, options.record != nil { d.enableRecording() }
        let outgoing = SPSCRing<Float>(minimumCapacity: 24_000 * 2, zero: 0)
        let incoming = SPSCRing<Float>(minimumCapacity: 24_000 * 4, zero: 0)
        let inbox = TextInbox()
        let closed = Atomic<Int>(-1)
        var events = ChatClient.Events()
        events.audio = { pcm in _ = pcm.withUnsafeBufferPointer { incoming.write($0.baseAddress!, count: $0.count) } }
        events.text = { inbox.push($0) }
        events.error = { inbox.push("\n[server error: \($0)]\n") }
        events.closed = { code in closed.store(Int(code ?? 0), ordering: .relaxed) }
        let p = options.sampling
        let parameters = SessionParameters(textTemperature: p.textTemperature, textTopK: p.textTopK, audioTemperature: p.temperature,
                                           audioTopK: p.topK, textSeed: p.seed, audioSeed: p.seed)
        let client: ChatClient
        do {
            client = try await ChatClient.connect(url: url, parameters: parameters, token: options.token, events: events)
        } catch {
            throw ValidationError("cannot talk to \(url): \(error)")
        }

        let done = Atomic<Bool>(false)
        let lags = Atomic<Int>(0)
        let stop = self.stop
        // Microphone → outgoing ring (a sound card, or stdin paced like one).
        let captureThread = Thread {
            var buffer = [Float](repeating: 0, count: frame)
            var raw = [Int16](repeating: 0, count: frame)
            var next = DispatchTime.now().uptimeNanoseconds
            while !done.load(ordering: .relaxed) && !stop.isSet {
                switch endpoint {
                case .device(let d):
                    guard (try? buffer.withUnsafeMutableBufferPointer { try d.capture(into: $0.baseAddress!, frames: frame) }) == true else {
                        stop.set(); return
                    }
                case .pipes:
                    let want = frame * 2
                    var got = 0
                    while got < want {
                        let n = raw.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress! + got, want - got) }
                        if n <= 0 { break }
                        got += n
                    }
                    if got < want { stop.set(); return }   // end of input ends the conversation
                    for i in 0..<frame { buffer[i] = PCM.float(from: Int16(littleEndian: raw[i])) }
                    next += 80_000_000
                    let now = DispatchTime.now().uptimeNanoseconds
                    if next > now { usleep(UInt32((next - now) / 1000)) }
                }
                _ = buffer.withUnsafeBufferPointer { outgoing.write($0.baseAddress!, count: frame) }
            }
        }
        // Outgoing ring → Opus → network, off the audio thread.
        let senderThread = Thread {
            var buffer = [Float](repeating: 0, count: frame)
            while !done.load(ordering: .relaxed) {
                if outgoing.availableToRead >= frame {
                    _ = buffer.withUnsafeMutableBufferPointer { outgoing.read(into: $0.baseAddress!, count: frame) }
                    buffer.withUnsafeBufferPointer { client.send($0) }
                } else {
                    usleep(2000)
                }
            }
        }
        // Incoming ring → speaker (silence and a lag count when the server is late).
        let playbackThread = Thread {
            var buffer = [Float](repeating: 0, count: frame)
            var raw = [Int16](repeating: 0, count: frame)
            var started = false
            var next = DispatchTime.now().uptimeNanoseconds
            while !done.load(ordering: .relaxed) {
                let got = buffer.withUnsafeMutableBufferPointer { incoming.read(into: $0.baseAddress!, count: frame) }
                if got > 0 { started = true }
                if got < frame {
                    for i in got..<frame { buffer[i] = 0 }
                    if started { lags.add(1, ordering: .relaxed) }
                }
                switch endpoint {
                case .device(let d):
                    if (try? buffer.withUnsafeBufferPointer { try d.play($0.baseAddress!, frames: frame) }) == nil { stop.set(); return }
                case .pipes:
                    next += 80_000_000
                    let now = DispatchTime.now().uptimeNanoseconds
                    if next > now { usleep(UInt32((next - now) / 1000)) }
                    for i in 0..<frame { raw[i] = PCM.int16(from: buffer[i]).littleEndian }
                    let n = raw.withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress!, $0.count) }
                    if n < 0 { stop.set(); return }
                }
            }
        }
        for t in [captureThread, senderThread, playbackThread] { t.start() }

        let ui = TerminalUI()
        let showStatus = !options.pipe
        if showStatus { ui.start("duplex talk — connected to \(url). Ctrl-C to stop.") }
        var user: [Float] = [], system: [Float] = []
        let started = Date()
        while !stop.isSet && closed.load(ordering: .relaxed) < 0 {
            if let seconds = options.seconds, Date().timeIntervalSince(started) >= seconds { break }
            try await Task.sleep(nanoseconds: 50_000_000)
            for piece in inbox.drain() {
                if options.pipe { warn(piece) } else { ui.append(piece) }
            }
            if case .device(let d) = endpoint {
                if options.record != nil { d.drainRecording(user: &user, system: &system) }
                ui.status("in \(TerminalUI.meter(d.inputLevel)) out \(TerminalUI.meter(d.outputLevel))  lag \(lags.load(ordering: .relaxed)) frame(s)  xruns in \(d.xruns.capture) out \(d.xruns.playback)")
            }
        }
        done.store(true, ordering: .relaxed)
        await client.close()
        while captureThread.isExecuting || senderThread.isExecuting || playbackThread.isExecuting {
            if options.pipe { close(STDIN_FILENO) }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        if let record = options.record, case .device(let d) = endpoint {
            d.drainRecording(user: &user, system: &system)
            try writeRecording(record, user: user, system: system)
        }
        let code = closed.load(ordering: .relaxed)
        let summary = String(format: "%.1f s with %@; late frames (played as silence) %d", Date().timeIntervalSince(started), url, lags.load(ordering: .relaxed))
            + (code > 0 ? "; the server closed the connection (code \(code))" : "")
        if options.pipe { warn(summary) } else { ui.finish(summary) }
    }
}

/// Text pieces from the network thread to the UI thread (not an audio path: a lock is fine).
final class TextInbox: @unchecked Sendable {
    private let lock = NSLock()
    private var pieces: [String] = []
    func push(_ s: String) { lock.withLock { pieces.append(s) } }
    func drain() -> [String] { lock.withLock { defer { pieces.removeAll() }; return pieces } }
}
