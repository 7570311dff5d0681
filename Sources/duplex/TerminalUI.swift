import DuplexEngine
import Foundation

/// The live conversation screen: the inner monologue as wrapped text, and below it one status
/// line (input and output level meters, lag, xruns) redrawn in place. Without a terminal (stdout
/// redirected) it prints the text alone.
final class TerminalUI {
    let isTerminal: Bool
    private let fd: Int32
    private var text: MonologueText
    private var column = 0
    private var lastStatus = Date.distantPast

    /// `toStderr`: stdout carries audio (`talk --pipe`), so the screen is stderr.
    init(toStderr: Bool = false) {
        fd = toStderr ? STDERR_FILENO : STDOUT_FILENO
        isTerminal = isatty(fd) == 1
        var size = winsize()
        let width = ioctl(fd, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 ? Int(size.ws_col) : 80
        text = MonologueText(width: max(20, width - 1))
    }

    func start(_ banner: String) {
        write(banner + "\n")
        if isTerminal { write("\n") }   // the text line; the status line goes below it
    }

    /// Appends a piece of the monologue.
    func append(_ piece: String) {
        let out = text.append(piece)
        guard !out.isEmpty else { return }
        if isTerminal {
            // The cursor lives on the status line: clear it, go up to the end of the text, write,
            // come back down.
            write("\r\u{1B}[K\u{1B}[1A\u{1B}[\(column + 1)G" + out + "\n")
        } else {
            write(out)
        }
        if let lastNewline = out.lastIndex(of: "\n") {
            column = out[out.index(after: lastNewline)...].count
        } else {
            column += out.count
        }
    }

    /// Redraws the status line, at most ten times a second (a terminal need not see more).
    func status(_ line: String) {
        guard isTerminal, Date().timeIntervalSince(lastStatus) >= 0.1 else { return }
        lastStatus = Date()
        write("\r\u{1B}[K\u{1B}[2m" + line + "\u{1B}[0m")
    }

    func finish(_ summary: String) {
        if isTerminal { write("\r\u{1B}[K") }
        write("\n" + summary + "\n")
    }

    static func meter(_ level: Float) -> String {
        let bars = ["▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"]
        let db = 20 * log10(max(1e-5, Double(level)))
        let n = Int(((db + 60) / 60 * 8).rounded()).clamped(to: 0...8)
        return (0..<8).map { $0 < n ? bars[$0] : " " }.joined()
    }

    private func write(_ s: String) {
        (fd == STDERR_FILENO ? FileHandle.standardError : FileHandle.standardOutput).write(Data(s.utf8))
    }
}

extension Comparable {
    func clamped(to range: ClosedRange<Self>) -> Self { min(max(self, range.lowerBound), range.upperBound) }
}
