import Foundation
import ArgumentParser
import DuplexCore

@main
struct Duplex: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "duplex",
        abstract: "Real-time full-duplex spoken dialogue (Moshi-class models) on a Linux CPU.",
        subcommands: [Info.self, Talk.self, Pipe.self, Bench.self, Generate.self, Transcribe.self, Serve.self, Codec.self, Room.self, AEC.self, Devices.self, Tokenize.self, BenchKernels.self, BenchLM.self, Quantize.self])
}

/// Options every command that computes takes. OpenBLAS's thread count is always set from here,
/// never left to the library's default.
struct ComputeOptions: ParsableArguments {
    @Option(name: [.customShort("t"), .long], help: "Compute threads (default: all cores).")
    var threads: Int?

    var resolvedThreads: Int { max(1, threads ?? ProcessInfo.processInfo.activeProcessorCount) }

    func apply() { Kernels.setThreads(resolvedThreads) }
}
