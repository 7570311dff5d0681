// swift-tools-version: 6.0
import PackageDescription

// Release builds are what people run and what benchmarks measure; the real-time path is all
// arithmetic over preallocated buffers, so bounds checks there are removed in release only.
let optimized: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
]

let package = Package(
    name: "duplex",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "duplex", targets: ["duplex"]),
        .library(name: "DuplexCore", targets: ["DuplexCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System-library shims: one header and a module map each, found through pkg-config.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CALSA", pkgConfig: "alsa",
                       providers: [.apt(["libasound2-dev"])]),
        .systemLibrary(name: "COpus", pkgConfig: "opus",
                       providers: [.apt(["libopus-dev"])]),
        .systemLibrary(name: "COgg", pkgConfig: "ogg",
                       providers: [.apt(["libogg-dev"])]),

        // No I/O, no threads: tensors, kernels, weights, the models.
        .target(name: "DuplexCore", dependencies: ["CBLAS"], swiftSettings: optimized),

        // PCM formats, WAV, ring buffers, ALSA devices, resampling.
        .target(name: "DuplexAudio", dependencies: ["CALSA"], swiftSettings: optimized),

        .executableTarget(
            name: "duplex",
            dependencies: [
                "DuplexCore", "DuplexAudio", "CBLAS", "CALSA", "COpus", "COgg",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: optimized),

        .testTarget(name: "DuplexCoreTests", dependencies: ["DuplexCore"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "DuplexAudioTests", dependencies: ["DuplexAudio"]),
        // Runs the built `duplex` binary end to end (exit codes, stdout/stderr); it needs no import
        // of the executable, only the files DuplexCore writes.
        .testTarget(name: "DuplexCLITests", dependencies: ["DuplexCore"]),
    ]
)
