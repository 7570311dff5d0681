import COgg
import COpus
import Foundation

/// A problem with an Ogg/Opus stream from a peer; the session reports it and goes on or closes.
public struct OggOpusError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Encodes mono PCM into an Ogg Opus stream the way Kyutai's clients and servers expect
/// (`sphn.OpusStreamWriter`): stream serial 42, an OpusHead page (pre-skip 3840, input rate
/// 48000) and an OpusTags page before the first audio, then one Opus packet per Ogg page.
/// Paging is libogg's (the distribution's, well fuzzed), not a hand-rolled writer.
public final class OggOpusWriter {
    public let sampleRate: Int
    /// Samples per Opus packet (960 = 40 ms at 24 kHz, as sphn writes).
    public let packetSamples: Int
    private let encoder: OpaquePointer
    private var stream = ogg_stream_state()
    private var pending: [Float] = []
    private var packetNumber: Int64 = 0
    /// Granule position in 48 kHz units, as Ogg Opus requires.
    private var granule: Int64 = 0
    private var packetBuffer = [UInt8](repeating: 0, count: 4000)
    private var headersWritten = false

    public static let serial: Int32 = 42

    public init(sampleRate: Int = 24_000, packetSamples: Int = 960, bitrate: Int? = nil) throws {
        guard [8000, 12000, 16000, 24000, 48000].contains(sampleRate) else {
            throw OggOpusError("Opus cannot encode at \(sampleRate) Hz")
        }
        let allowed = [1, 2, 4, 8, 16, 24].map { $0 * sampleRate / 400 }  // 2.5, 5, 10, 20, 40, 60 ms
        guard allowed.contains(packetSamples) else {
            throw OggOpusError("\(packetSamples) samples is not an Opus frame size at \(sampleRate) Hz")
        }
        self.sampleRate = sampleRate
        self.packetSamples = packetSamples
        var error: Int32 = 0
        guard let e = opus_encoder_create(Int32(sampleRate), 1, OPUS_APPLICATION_VOIP, &error), error == OPUS_OK else {
            throw OggOpusError("cannot create an Opus encoder: \(String(cString: opus_strerror(error)))")
        }
        encoder = e
        if let bitrate { _ = duplex_opus_set_bitrate(e, Int32(bitrate)) }
        ogg_stream_init(&stream, Self.serial)
        pending.reserveCapacity(packetSamples * 4)
    }

    deinit {
        opus_encoder_destroy(encoder)
        ogg_stream_clear(&stream)
    }

    /// Appends samples (any count); returns the bytes of every page completed, headers first.
    public func append(_ samples: UnsafeBufferPointer<Float>) -> [UInt8] {
        var out: [UInt8] = []
        if !headersWritten {
            writeHeaders(into: &out)
            headersWritten = true
        }
        pending.append(contentsOf: samples)
        var consumed = 0
        while pending.count - consumed >= packetSamples {
            let length = pending.withUnsafeBufferPointer { pcm in
                packetBuffer.withUnsafeMutableBufferPointer { buf in
                    opus_encode_float(encoder, pcm.baseAddress! + consumed, Int32(packetSamples), buf.baseAddress!, Int32(buf.count))
                }
            }
            consumed += packetSamples
            guard length > 0 else { continue }
            granule += Int64(packetSamples * 48_000 / sampleRate)
            packetBuffer.withUnsafeMutableBufferPointer { buf in
                var packet = ogg_packet(packet: buf.baseAddress, bytes: Int(length), b_o_s: 0, e_o_s: 0,
                                        granulepos: granule, packetno: packetNumber)
                packetNumber += 1
                ogg_stream_packetin(&stream, &packet)
            }
            flushPages(into: &out)
        }
        pending.removeFirst(consumed)
        return out
    }

    public func append(_ samples: [Float]) -> [UInt8] {
        samples.withUnsafeBufferPointer { append($0) }
    }

    private func writeHeaders(into out: inout [UInt8]) {
        var head: [UInt8] = Array("OpusHead".utf8)
        head.append(1)                               // version
        head.append(1)                               // channels
        head += le16(3840)                           // pre-skip (48 kHz samples), as sphn
        head += le32(48_000)                         // input sample rate field, as sphn
        head += le16(0)                              // output gain
        head.append(0)                               // channel mapping family
        var tags: [UInt8] = Array("OpusTags".utf8)
        let vendor = Array("duplex".utf8)
        tags += le32(UInt32(vendor.count)) + vendor + le32(0)
        for (i, bytes) in [head, tags].enumerated() {
            var copy = bytes
            copy.withUnsafeMutableBufferPointer { buf in
                var packet = ogg_packet(packet: buf.baseAddress, bytes: buf.count, b_o_s: i == 0 ? 1 : 0, e_o_s: 0,
                                        granulepos: 0, packetno: packetNumber)
                packetNumber += 1
                ogg_stream_packetin(&stream, &packet)
            }
            flushPages(into: &out)
        }
    }

    private func flushPages(into out: inout [UInt8]) {
        var page = ogg_page()
        while ogg_stream_flush(&stream, &page) != 0 {
            out.append(contentsOf: UnsafeBufferPointer(start: page.header, count: page.header_len))
            out.append(contentsOf: UnsafeBufferPointer(start: page.body, count: page.body_len))
        }
    }

    private func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
    private func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }
}

/// Decodes an Ogg Opus byte stream that arrives in arbitrary pieces (pages may span messages)
/// into mono PCM at `sampleRate`. Accepts every legal Opus packet duration. Garbage between
/// pages is skipped as Ogg's resynchronisation allows; a stream that is not Opus, or packets
/// that do not decode, are reported, never crash.
public final class OggOpusReader {
    public let sampleRate: Int
    private var sync = ogg_sync_state()
    private var stream = ogg_stream_state()
    private var streamSerial: Int32?
    private let decoder: OpaquePointer
    private var packetsSeen = 0
    private var pcm = [Float](repeating: 0, count: 5760)
    /// Packets that failed to decode (dropped) and bytes skipped to regain page sync.
    public private(set) var corruptPackets = 0
    public private(set) var resyncs = 0

    public init(sampleRate: Int = 24_000) throws {
        guard [8000, 12000, 16000, 24000, 48000].contains(sampleRate) else {
            throw OggOpusError("Opus cannot decode at \(sampleRate) Hz")
        }
        self.sampleRate = sampleRate
        var error: Int32 = 0
        guard let d = opus_decoder_create(Int32(sampleRate), 1, &error), error == OPUS_OK else {
            throw OggOpusError("cannot create an Opus decoder: \(String(cString: opus_strerror(error)))")
        }
        decoder = d
        ogg_sync_init(&sync)
    }

    deinit {
        opus_decoder_destroy(decoder)
        ogg_sync_clear(&sync)
        if streamSerial != nil { ogg_stream_clear(&stream) }
    }

    /// Feeds bytes; returns the PCM decoded from every packet they completed.
    public func append(_ bytes: UnsafeRawBufferPointer) throws -> [Float] {
        var out: [Float] = []
        guard bytes.count > 0 else { return out }
        guard let buffer = ogg_sync_buffer(&sync, bytes.count) else { throw OggOpusError("out of memory buffering Ogg data") }
        UnsafeMutableRawPointer(buffer).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        ogg_sync_wrote(&sync, bytes.count)
        var page = ogg_page()
        while true {
            let result = ogg_sync_pageout(&sync, &page)
            if result == 0 { break }
            if result < 0 { resyncs += 1; continue }
            let serial = ogg_page_serialno(&page)
            if streamSerial == nil {
                guard ogg_page_bos(&page) != 0 else { continue }  // wait for a stream's first page
                ogg_stream_init(&stream, serial)
                streamSerial = serial
            }
            guard serial == streamSerial else { continue }  // other logical streams are ignored
            ogg_stream_pagein(&stream, &page)
            var packet = ogg_packet()
            while true {
                let p = ogg_stream_packetout(&stream, &packet)
                if p == 0 { break }
                if p < 0 { corruptPackets += 1; continue }
                try handle(packet, into: &out)
            }
        }
        return out
    }

    public func append(_ bytes: [UInt8]) throws -> [Float] {
        try bytes.withUnsafeBytes { try append($0) }
    }

    private func handle(_ packet: ogg_packet, into out: inout [Float]) throws {
        defer { packetsSeen += 1 }
        let data = UnsafeRawBufferPointer(start: packet.packet, count: packet.bytes)
        if packetsSeen == 0 {
            guard data.count >= 19, Array(data.prefix(8)) == Array("OpusHead".utf8) else {
                throw OggOpusError("the Ogg stream is not Opus (no OpusHead)")
            }
            guard data[9] == 1 else { throw OggOpusError("only mono Opus is accepted, the stream has \(data[9]) channels") }
            return
        }
        if packetsSeen == 1, data.count >= 8, Array(data.prefix(8)) == Array("OpusTags".utf8) { return }
        let samples = pcm.withUnsafeMutableBufferPointer { buf in
            opus_decode_float(decoder, packet.packet, Int32(packet.bytes), buf.baseAddress!, Int32(buf.count), 0)
        }
        if samples < 0 {
            corruptPackets += 1
            return
        }
        out.append(contentsOf: pcm[0..<Int(samples)])
    }
}
