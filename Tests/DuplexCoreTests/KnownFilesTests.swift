import DuplexCore
import Foundation
import XCTest

/// SHA-256 by FIPS 180-4's test vectors, the cache beside a file, and the table of releases.
final class KnownFilesTests: XCTestCase {
    func testSHA256Vectors() {
        XCTAssertEqual(FileHash.sha256(of: [UInt8]()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(FileHash.sha256(of: Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(FileHash.sha256(of: Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    func testFileHashIsStreamedAndCachedUntilTheFileChanges() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("hash-\(getpid()).bin").path
        defer { try? FileManager.default.removeItem(atPath: path); try? FileManager.default.removeItem(atPath: path + ".sha256") }
        // A million 'a': FIPS 180-4's long vector, read in several chunks.
        try Data(repeating: UInt8(ascii: "a"), count: 1_000_000).write(to: URL(fileURLWithPath: path))
        let first = try FileHash.sha256(file: path)
        XCTAssertEqual(first.hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        XCTAssertFalse(first.cached)
        XCTAssertEqual(try FileHash.sha256(file: path).cached, true)
        try Data(repeating: UInt8(ascii: "b"), count: 10).write(to: URL(fileURLWithPath: path))
        let changed = try FileHash.sha256(file: path)
        XCTAssertFalse(changed.cached, "a file of another size is hashed again")
        XCTAssertNotEqual(changed.hex, first.hex)
    }

    func testReleasesAreToldApartByHashAndSize() {
        let mimi = KnownFile.identify(sha256: "09b782f0" + String(repeating: "0", count: 56), size: 384_644_900)
        XCTAssertTrue(mimi?.what.contains("Moshi was trained with") ?? false)
        let other = KnownFile.identify(sha256: "31c14cf3" + String(repeating: "0", count: 56), size: 384_644_900)
        XCTAssertTrue(other?.what.contains("other weights") ?? false, "the same names and size, told apart")
        XCTAssertNil(KnownFile.identify(sha256: "09b782f0" + String(repeating: "0", count: 56), size: 1), "a size that does not fit")
        XCTAssertNil(KnownFile.identify(sha256: String(repeating: "f", count: 64), size: 10))
        XCTAssertEqual(Set(KnownFile.table.map(\.sha256Prefix)).count, KnownFile.table.count)
        // The family the issue names: Moshi, PersonaPlex, STT, Hibiki, the tokenizers.
        let hibiki = KnownFile.identify(sha256: "c22110fb855aa049e17346ea2e88355bdd664f06cbfd09948380ab5e85b39697", size: 857_314)
        XCTAssertEqual(hibiki?.name, "tokenizer_spm_48k_multi6_2.model")
        for repo in ["moshiko", "moshika", "personaplex", "stt-2.6b", "stt-1b", "hibiki"] {
            XCTAssertTrue(KnownFile.table.contains { $0.repo.contains(repo) }, repo)
        }
    }
}
