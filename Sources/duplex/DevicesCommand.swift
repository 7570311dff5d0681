import ArgumentParser
import DuplexAudio

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List ALSA capture and playback PCMs (like arecord -L / aplay -L).")

    func run() throws {
        let hints = ALSADevice.list()
        if hints.isEmpty {
            print("no ALSA PCMs found (no sound card, or ALSA is not configured)")
            return
        }
        for (title, wanted) in [("capture (-i/--input-device)", \ALSADeviceHint.capture),
                                ("playback (-o/--output-device)", \ALSADeviceHint.playback)] {
            print("\(title):")
            for hint in hints where hint[keyPath: wanted] {
                print("  \(hint.name)")
                for line in hint.description.split(separator: "\n") { print("      \(line)") }
            }
        }
    }
}
