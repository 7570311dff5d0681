// swift-tools-version: 6.0
import PackageDescription

// Release builds are what people run and what benchmarks measure. Every target keeps Swift's
// checks (-O, not -Ounchecked): the parsers and the network-facing server must trap on a bug, not
// corrupt memory, and the kernels lose nothing measurable — their inner loops run over unsafe
// pointers already. Measured side by side (README, "Build"): codec + LM frame and LM step at
// frame 10 and at a full context within ±2 % of -Ounchecked, inside the run-to-run spread.
// On x86-64 the kernels assume AVX2 + FMA (every x86 server and desktop CPU since 2013): without
// it, SIMD multiply-adds become calls into libm's software fma and run 50 times slower.
#if arch(x86_64)
let cpuFlags = ["-target-cpu", "haswell"]
#else
let cpuFlags: [String] = []
#endif
let optimized: [SwiftSetting] = [
    .unsafeFlags(["-wmo"], .when(configuration: .release)),
    .unsafeFlags(cpuFlags),
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
        .package(url: "https://github.com/apple/swift-nio", from: "2.65.0"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.2.0"),
        // TLS for `duplex serve` and `talk --connect wss://`; a self-signed certificate made at start-up.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.27.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.0.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.0.0"),
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

        // alsa-lib's error handler is C-variadic: this keeps its messages for duplex's errors
        // instead of letting alsa-lib print them to stderr.
        .target(name: "CALSAErrors", dependencies: ["CALSA"]),

        // Quantized-weight kernels in C: per-function target attributes and runtime CPU dispatch
        // (Swift can neither emit maddubs/dpbusd nor pick an ISA per function). No unsafe flags.
        .target(name: "CQuant"),

        // Echo cancellation, noise suppression and gain control: WebRTC's audio processing module
        // (C++, 0.3) and SpeexDSP, both loaded with dlopen at run time so that a machine without
        // them still runs duplex (with the processing off and a warning). Building needs their
        // headers (libwebrtc-audio-processing-dev, libspeexdsp-dev); WebRTC's live in their own
        // folder, which Debian's pkg-config file names, and SwiftPM would also link the library
        // (and reject its -D flags) if it came through pkg-config, so the folder is given here.
        .target(name: "CAudioProcessing",
                cxxSettings: [.unsafeFlags(["-I/usr/include/webrtc_audio_processing"])],
                linkerSettings: [.linkedLibrary("dl")]),

        // Heap-allocation counter for benchmarks (interposes malloc in the executable only).
        .target(name: "CAllocCounter"),

        // No I/O, no threads: tensors, kernels, weights, the models.
        .target(name: "DuplexCore", dependencies: ["CBLAS", "CQuant"], swiftSettings: optimized),

        // PCM formats, WAV, ring buffers, ALSA devices, resampling, capture processing (echo
        // cancellation), a simulated room.
        .target(name: "DuplexAudio", dependencies: ["CALSA", "CALSAErrors", "CAudioProcessing"],
                swiftSettings: optimized + [.unsafeFlags(["-O"], .when(configuration: .debug))]),

        // Sessions, the frame pipeline, the frame clock, latency accounting.
        .target(name: "DuplexEngine", dependencies: ["DuplexCore", "DuplexAudio"], swiftSettings: optimized),

        // Kyutai's websocket protocol, Ogg/Opus streaming.
        .target(
            name: "DuplexServer",
            dependencies: [
                "DuplexEngine", "COpus", "COgg",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: optimized),

        .executableTarget(
            name: "duplex",
            dependencies: [
                "DuplexCore", "DuplexAudio", "DuplexEngine", "DuplexServer", "CAllocCounter", "CBLAS", "CALSA", "COpus", "COgg", "CQuant",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: optimized),

        .testTarget(name: "DuplexCoreTests", dependencies: ["DuplexCore", "CQuant"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "DuplexAudioTests", dependencies: ["DuplexAudio"]),
        // DuplexServer too: the same-answer test runs a websocket session's worker beside pipe and generate.
        .testTarget(name: "DuplexEngineTests", dependencies: ["DuplexEngine", "DuplexServer"]),
        // Runs the built `duplex` binary end to end (exit codes, stdout/stderr); it needs no import
        // of the executable, only the files DuplexCore writes.
        .testTarget(name: "DuplexCLITests", dependencies: ["DuplexCore"]),
        .testTarget(name: "DuplexServerTests", dependencies: [
            "DuplexServer",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Atomics", package: "swift-atomics"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
    ]
)
