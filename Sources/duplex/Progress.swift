import Foundation

/// A one-line progress bar on stderr that shows itself only once work has taken longer than
/// `delay` seconds, and only when stderr is a terminal (logs and pipes stay clean).
final class ProgressBar {
    private let label: String
    private let start = Date()
    private let delay: TimeInterval
    private let enabled = isatty(STDERR_FILENO) == 1
    private var shown = false
    private var lastDraw = Date.distantPast

    init(_ label: String, delay: TimeInterval = 0.5) {
        self.label = label
        self.delay = delay
    }

    func update(_ done: Int, of total: Int) {
        guard enabled, total > 0 else { return }
        let now = Date()
        guard now.timeIntervalSince(start) >= delay, now.timeIntervalSince(lastDraw) >= 0.1 || done == total else { return }
        lastDraw = now
        shown = true
        let fraction = min(1, Double(done) / Double(total))
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        let rate = Double(done) / max(1e-9, now.timeIntervalSince(start))
        FileHandle.standardError.write("\r\(label) \(bar) \(Int(fraction * 100))% \(Format.bytes(done))/\(Format.bytes(total)) \(Format.bytes(Int(rate)))/s".data(using: .utf8)!)
    }

    func finish() {
        if shown { FileHandle.standardError.write("\r\u{1B}[K".data(using: .utf8)!) }
    }
}

enum Format {
    static func bytes(_ n: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n)
        var u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(n) B" : String(format: "%.2f %@", v, units[u])
    }

    static func count(_ n: Int) -> String {
        if n >= 1_000_000_000 { return String(format: "%.2f B", Double(n) / 1e9) }
        if n >= 1_000_000 { return String(format: "%.2f M", Double(n) / 1e6) }
        if n >= 10_000 { return String(format: "%.1f k", Double(n) / 1e3) }
        return "\(n)"
    }
}

/// Writes a line to stderr (diagnostics never mix into stdout, which pipe mode uses for audio).
func warn(_ message: String) {
    FileHandle.standardError.write((message + "\n").data(using: .utf8)!)
}

/// A failure the user can act on, printed by ArgumentParser as "Error: <message>" with exit
/// status 1, without the usage text a `ValidationError` adds (the arguments were fine).
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
