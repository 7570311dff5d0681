import Foundation
import XCTest

/// One finished run of the `duplex` binary.
struct CLIRun {
    let status: Int32
    let stdout: String
    let stderr: String
}

/// The built binary is missing: a failure, never a skip (a CLI suite that silently checks
/// nothing is worse than a red one).
struct MissingBinary: Error, CustomStringConvertible {
    let description: String
}

private final class BundleToken {}

/// The `duplex` executable next to this test bundle (SwiftPM puts every product of a build
/// configuration in one folder; `swift build --build-tests` builds it with the tests).
func duplexBinary() throws -> URL {
    let candidates = [Bundle.main.bundleURL, Bundle(for: BundleToken.self).bundleURL.deletingLastPathComponent()]
        .map { $0.appendingPathComponent("duplex") }
    guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
        throw MissingBinary(description: "duplex binary not found in \(candidates.map(\.path)): build it with `swift build --build-tests`")
    }
    return found
}

/// The package root (where `models/` lives), from this file's path.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

func cliScratch() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("duplex-cli-tests-\(getpid())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// Runs `duplex arguments…` as a user would and checks it neither crashed nor was killed.
/// `environment` is added to this process's own (e.g. a library override).
func runDuplex(_ arguments: [String], stdin: URL? = nil, environment: [String: String] = [:],
               file: StaticString = #filePath, line: UInt = #line) throws -> CLIRun {
    let dir = try cliScratch()
    let out = dir.appendingPathComponent("stdout-\(UUID().uuidString)"), err = dir.appendingPathComponent("stderr-\(UUID().uuidString)")
    for f in [out, err] { XCTAssertTrue(FileManager.default.createFile(atPath: f.path, contents: nil), file: file, line: line) }
    let process = Process()
    process.executableURL = try duplexBinary()
    process.arguments = arguments
    if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    if let stdin { process.standardInput = try FileHandle(forReadingFrom: stdin) }
    try process.run()
    process.waitUntilExit()
    let result = CLIRun(status: process.terminationStatus,
                        stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                        stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
    XCTAssertEqual(process.terminationReason, .exit, "duplex \(arguments) was killed by a signal: \(result.stderr)",
                   file: file, line: line)
    for crash in ["Fatal error", "Stack dump", "stack trace", "Segmentation", "Illegal instruction"] {
        XCTAssertFalse(result.stderr.contains(crash), "duplex \(arguments) crashed: \(result.stderr)", file: file, line: line)
    }
    return result
}
