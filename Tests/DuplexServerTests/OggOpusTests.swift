import DuplexServer
import Foundation
import XCTest

final class OggOpusTests: XCTestCase {
    func testPagesLookLikeSphns() throws {
        let writer = try OggOpusWriter()
        let first = writer.append(speechLike(1920))
        // OpusHead page, OpusTags page, then two 40 ms audio pages for one 80 ms frame.
        let pages = splitPages(first)
        XCTAssertEqual(pages.count, 4)
        XCTAssertEqual(Array(pages[0].body.prefix(8)), Array("OpusHead".utf8))
        XCTAssertEqual(pages[0].headerType & 0x02, 0x02, "first page carries BOS")
        XCTAssertEqual(Array(pages[1].body.prefix(8)), Array("OpusTags".utf8))
        XCTAssertEqual(pages.map(\.serial), [42, 42, 42, 42])
        XCTAssertEqual(pages[2].granule, 1920)
        XCTAssertEqual(pages[3].granule, 3840)
        let next = splitPages(writer.append(speechLike(1920)))
        XCTAssertEqual(next.count, 2)
        XCTAssertEqual(next.map(\.granule), [5760, 7680])
    }

    func testRoundTripKeepsSampleCountAndResemblesInput() throws {
        let writer = try OggOpusWriter()
        let reader = try OggOpusReader()
        let input = speechLike(1920 * 25)
        var bytes: [UInt8] = []
        for f in 0..<25 { bytes += writer.append(Array(input[(f * 1920)..<((f + 1) * 1920)])) }
        // Deliver the stream in awkward pieces: pages split across messages.
        var decoded: [Float] = []
        var offset = 0
        var piece = 1
        while offset < bytes.count {
            let n = min(piece, bytes.count - offset)
            decoded += try reader.append(Array(bytes[offset..<(offset + n)]))
            offset += n
            piece = piece * 3 % 1000 + 7
        }
        XCTAssertEqual(decoded.count, input.count)
        // A lossy codec keeps the envelope and the energy, not the waveform's phase.
        let (inEnv, outEnv) = (envelope(input), envelope(decoded))
        let energyRatio = outEnv.reduce(0, +) / inEnv.reduce(0, +)
        XCTAssertEqual(energyRatio, 1, accuracy: 0.35, "energy kept")
        XCTAssertGreaterThan(correlation(inEnv.map(Float.init), outEnv.map(Float.init), lag: 0, from: 4), 0.9, "syllable envelope kept")
        XCTAssertEqual(reader.corruptPackets, 0)
    }

    func testGarbageIsSkippedAndCorruptPagesDropped() throws {
        let reader = try OggOpusReader()
        XCTAssertEqual(try reader.append(Array(repeating: UInt8(0x55), count: 10_000)), [])
        // A stream whose first page is damaged (CRC fails): nothing decodes, nothing crashes,
        // and the reader keeps waiting for a stream start.
        let writer = try OggOpusWriter()
        var bytes = writer.append(speechLike(1920))
        bytes[40] ^= 0xFF
        XCTAssertEqual(try reader.append(bytes), [])
        XCTAssertGreaterThan(reader.resyncs, 0)
    }

    func testAStreamThatIsNotOpusIsRefused() throws {
        let reader = try OggOpusReader()
        let page = oggPage(body: Array("\u{01}vorbis".utf8) + Array(repeating: 0, count: 23), bos: true)
        XCTAssertThrowsError(try reader.append(page)) { error in
            XCTAssertTrue("\(error)".contains("not Opus"), "\(error)")
        }
    }

    // MARK: helpers

    private struct Page { var headerType: UInt8; var granule: Int64; var serial: UInt32; var body: [UInt8] }

    private func splitPages(_ bytes: [UInt8]) -> [Page] {
        var pages: [Page] = []
        var o = 0
        while o + 27 <= bytes.count {
            XCTAssertEqual(Array(bytes[o..<(o + 4)]), Array("OggS".utf8))
            let segments = Int(bytes[o + 26])
            let lacing = bytes[(o + 27)..<(o + 27 + segments)]
            let bodyLength = lacing.reduce(0) { $0 + Int($1) }
            var granule: Int64 = 0
            for i in 0..<8 { granule |= Int64(bytes[o + 6 + i]) << (8 * i) }
            var serial: UInt32 = 0
            for i in 0..<4 { serial |= UInt32(bytes[o + 14 + i]) << (8 * i) }
            let start = o + 27 + segments
            pages.append(Page(headerType: bytes[o + 5], granule: granule, serial: serial, body: Array(bytes[start..<(start + bodyLength)])))
            o = start + bodyLength
        }
        return pages
    }

    /// RMS per 20 ms block.
    private func envelope(_ x: [Float]) -> [Double] {
        stride(from: 0, to: x.count - 479, by: 480).map { start in
            (x[start..<(start + 480)].reduce(0.0) { $0 + Double($1 * $1) } / 480).squareRoot()
        }
    }

    /// Pearson correlation of a and b shifted by lag, from index `from` on.
    private func correlation(_ a: [Float], _ b: [Float], lag: Int, from: Int) -> Double {
        let n = a.count - lag - from
        let ma = a[from..<(from + n)].reduce(0.0) { $0 + Double($1) } / Double(n)
        let mb = b[(from + lag)..<(from + lag + n)].reduce(0.0) { $0 + Double($1) } / Double(n)
        var ab = 0.0, aa = 0.0, bb = 0.0
        for i in from..<(from + n) {
            let x = Double(a[i]) - ma, y = Double(b[i + lag]) - mb
            ab += x * y; aa += x * x; bb += y * y
        }
        return ab / max(1e-12, (aa * bb).squareRoot())
    }

    private func indexOf(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where Array(haystack[i..<(i + needle.count)]) == needle { return i }
        return nil
    }
}
