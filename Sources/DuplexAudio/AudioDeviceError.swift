import CALSAErrors

/// A device problem a user can act on: which device, what went wrong, what ALSA itself said.
public struct AudioDeviceError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The device could not be opened (no such PCM or card, busy, no permission).
        case cannotOpen
        /// It opened but cannot run as asked (format, rate, channels, buffer).
        case unsupported
        /// It went away while in use (unplugged, card removed, driver shut down).
        case disconnected
        /// It stopped working (an I/O error, a recovery that failed, a broken plugin).
        case failed
    }

    public let device: String
    public let kind: Kind
    public let message: String
    /// alsa-lib's own messages about this failure (its root cause and its outcome), which it
    /// would otherwise have printed to stderr.
    public let alsaDetail: [String]

    public init(device: String, message: String, kind: Kind = .failed, alsaDetail: [String] = []) {
        self.device = device
        self.message = message
        self.kind = kind
        self.alsaDetail = alsaDetail
    }

    public var description: String {
        var text = "audio device \"\(device)\": \(message)"
        if !alsaDetail.isEmpty { text += " (ALSA: \(alsaDetail.joined(separator: "; ")))" }
        if kind == .cannotOpen { text += " — see `duplex devices`" }
        return text
    }
}

/// alsa-lib's error messages, kept by the C handler in `CALSAErrors` instead of printed.
/// Take a `mark()` before an ALSA call (one atomic load: allowed on the audio threads), and on
/// failure ask for what was said `since` it (the error path only: it locks and allocates).
enum ALSALibMessages {
    /// Routes alsa-lib's messages here; once per process, before the first ALSA call.
    static func install() { duplex_alsa_errors_install() }

    @inline(__always)
    static func mark() -> UInt64 { duplex_alsa_errors_count() }

    /// What alsa-lib said since `mark`, shortened to what a person needs: a failed name lookup
    /// says eight things (`cannot find card '0'`, then six lines of its configuration evaluator
    /// unwinding, then `Unknown PCM default`); the first is the cause and the last the outcome.
    static func since(_ mark: UInt64) -> [String] {
        let end = duplex_alsa_errors_count()
        let first = max(mark, end - min(end, UInt64(duplex_alsa_errors_capacity())))
        var messages: [String] = []
        var index = first
        var text = [CChar](repeating: 0, count: 512)
        while index < end {
            if duplex_alsa_errors_message(index, &text, text.count) != 0 {
                let message = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !message.isEmpty, messages.last != message { messages.append(message) }
            }
            index += 1
        }
        if messages.count > 2 { messages = [messages[0], messages[messages.count - 1]] }
        return messages
    }
}
