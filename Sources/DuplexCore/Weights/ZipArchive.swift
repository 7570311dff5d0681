import Foundation

/// The entries of a zip archive whose members are STORED (not compressed), as PyTorch's
/// `torch.save` writes them: the reader of `.pt` files starts here. Only the central directory
/// is trusted for sizes (torch sets the data-descriptor flag, so the local headers carry zeros);
/// each member's local header is checked against it. Zip64 end records are read (torch writes
/// one even for small files); a member that is compressed, encrypted or split over disks is
/// refused by name. Everything is bounded: the number of members, name lengths, and every
/// offset is checked against the file before it is used.
struct ZipArchive {
    struct Entry: Equatable {
        let name: String
        /// Byte range of the member's data inside the file.
        let range: Range<Int>
        let crc32: UInt32
    }

    static let maxEntries = 65_536
    static let maxNameBytes = 4096

    /// Members in central-directory order.
    let entries: [Entry]
    private let index: [String: Int]

    subscript(name: String) -> Entry? { index[name].map { entries[$0] } }

    typealias Fail = (WeightFileError.Kind, String) -> WeightFileError

    /// Parses the archive in `bytes`; `fail` makes the error (the caller adds the path).
    init(_ bytes: UnsafeRawBufferPointer, fail: Fail) throws {
        let size = bytes.count
        func u16(_ at: Int) -> Int { Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt16.self))) }
        func u32(_ at: Int) -> Int { Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self))) }
        func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        let startsLikeZip = size >= 4 && u32(0) == 0x0403_4b50

        // End of central directory: 22 bytes plus a comment of up to 65,535, at the very end.
        var eocd: Int?
        if size >= 22 {
            var at = size - 22
            let lowest = max(0, size - 22 - 65_535)
            while at >= lowest {
                if u32(at) == 0x0605_4b50, at + 22 + u16(at + 20) == size { eocd = at; break }
                at -= 1
            }
        }
        guard let eocd else {
            if startsLikeZip {
                throw fail(.truncated, "truncated zip archive: its end-of-central-directory record is missing (\(size) bytes; an interrupted copy?)")
            }
            throw fail(.badMagic, "not a zip archive (a PyTorch .pt file written by torch.save is one)")
        }
        guard u16(eocd + 4) == 0, u16(eocd + 6) == 0 || u16(eocd + 6) == 0xFFFF else {
            throw fail(.badArchive, "zip archive split over several disks")
        }
        var count = u16(eocd + 10)
        var directorySize = u32(eocd + 12)
        var directoryStart = u32(eocd + 16)
        if count == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryStart == 0xFFFF_FFFF {
            // Zip64: a 20-byte locator just before the end record points to the zip64 end record.
            let locator = eocd - 20
            guard locator >= 0, u32(locator) == 0x0706_4b50 else {
                throw fail(.badArchive, "zip64 archive without its zip64 end-of-central-directory locator")
            }
            let record64 = u64(locator + 8)
            guard size >= 56, record64 <= UInt64(size - 56), u32(Int(record64)) == 0x0606_4b50 else {
                throw fail(.badArchive, "zip64 end-of-central-directory record at \(record64) is missing or outside the \(size)-byte file")
            }
            let r = Int(record64)
            let (n, s, o) = (u64(r + 32), u64(r + 40), u64(r + 48))
            guard n <= UInt64(Self.maxEntries), s <= UInt64(size), o <= UInt64(size) else {
                throw fail(.badArchive, "zip64 end record claims \(n) entries, a \(s)-byte directory at \(o): beyond the \(size)-byte file or the \(Self.maxEntries)-entry limit")
            }
            (count, directorySize, directoryStart) = (Int(n), Int(s), Int(o))
        }
        guard count <= Self.maxEntries else {
            throw fail(.badArchive, "\(count) zip entries (limit \(Self.maxEntries))")
        }
        guard directoryStart + directorySize <= eocd else {
            throw fail(startsLikeZip && directoryStart + directorySize > size ? .truncated : .badArchive,
                       "the zip central directory [\(directoryStart), \(directoryStart + directorySize)) does not end before the end record at \(eocd)")
        }

        var entries: [Entry] = []
        var index: [String: Int] = [:]
        var at = directoryStart
        let end = directoryStart + directorySize
        for i in 0..<count {
            guard at + 46 <= end, u32(at) == 0x0201_4b50 else {
                throw fail(.badArchive, "zip central directory entry \(i) at \(at) is malformed")
            }
            let flags = u16(at + 8), method = u16(at + 10)
            var compressed = u32(at + 20), uncompressed = u32(at + 24)
            let nameLength = u16(at + 28), extraLength = u16(at + 30), commentLength = u16(at + 32)
            var local = u32(at + 42)
            let next = at + 46 + nameLength + extraLength + commentLength
            guard nameLength <= Self.maxNameBytes, next <= end else {
                throw fail(.badArchive, "zip central directory entry \(i) at \(at) runs past the directory")
            }
            let nameBytes = UnsafeRawBufferPointer(rebasing: bytes[(at + 46)..<(at + 46 + nameLength)])
            guard let name = String(validating: nameBytes, as: UTF8.self) else {
                throw fail(.badArchive, "zip entry \(i) has a name that is not UTF-8")
            }
            // Zip64 extended information: the 8-byte values of the fields set to all ones, in order.
            if compressed == 0xFFFF_FFFF || uncompressed == 0xFFFF_FFFF || local == 0xFFFF_FFFF {
                var e = at + 46 + nameLength
                let extraEnd = e + extraLength
                var found = false
                while e + 4 <= extraEnd {
                    let id = u16(e), length = u16(e + 2)
                    guard e + 4 + length <= extraEnd else { break }
                    if id == 0x0001 {
                        var f = e + 4
                        func take(_ field: inout Int) -> Bool {
                            guard field == 0xFFFF_FFFF else { return true }
                            guard f + 8 <= e + 4 + length, u64(f) <= UInt64(size) else { return false }
                            field = Int(u64(f))
                            f += 8
                            return true
                        }
                        found = take(&uncompressed) && take(&compressed) && take(&local)
                        break
                    }
                    e += 4 + length
                }
                guard found else { throw fail(.badArchive, "zip entry \(name): zip64 sizes without a valid zip64 extra field") }
            }
            guard flags & 1 == 0 else { throw fail(.badArchive, "zip entry \(name) is encrypted") }
            guard method == 0 else {
                let what = method == 8 ? "deflate" : "method \(method)"
                throw fail(.unsupportedCompression,
                           "zip entry \(name) is compressed (\(what)); torch.save stores its entries uncompressed — re-save the file with torch.save")
            }
            guard compressed == uncompressed else {
                throw fail(.badArchive, "zip entry \(name) is stored but its sizes differ (\(compressed) vs \(uncompressed) bytes)")
            }
            // The local header: its own name and extra lengths decide where the data starts.
            guard local + 30 <= size else {
                throw fail(.truncated, "zip entry \(name): its local header at \(local) lies beyond the \(size)-byte file")
            }
            guard u32(local) == 0x0403_4b50, u16(local + 26) == nameLength else {
                throw fail(.badArchive, "zip entry \(name): no matching local header at \(local)")
            }
            let dataStart = local + 30 + nameLength + u16(local + 28)
            guard dataStart <= size, compressed <= size - dataStart else {
                throw fail(.truncated, "zip entry \(name) needs bytes [\(dataStart), \(dataStart + compressed)) but the file has \(size): truncated")
            }
            guard index[name] == nil else { throw fail(.badArchive, "zip entry \(name) appears twice") }
            index[name] = entries.count
            entries.append(Entry(name: name, range: dataStart..<(dataStart + compressed), crc32: UInt32(u32(at + 16))))
            at = next
        }
        self.entries = entries
        self.index = index
    }

    /// Checks a member's bytes against the CRC-32 of its directory entry. A CRC of 0 on a
    /// non-empty member is taken as "not recorded" (`torch.serialization.set_crc32_options(False)`).
    static func verify(_ entry: Entry, in bytes: UnsafeRawBufferPointer, fail: Fail) throws {
        guard entry.crc32 != 0 || entry.range.isEmpty else { return }
        let actual = CRC32.checksum(UnsafeRawBufferPointer(rebasing: bytes[entry.range]))
        guard actual == entry.crc32 else {
            func hex(_ v: UInt32) -> String { String(repeating: "0", count: 8 - String(v, radix: 16).count) + String(v, radix: 16) }
            throw fail(.checksumMismatch, "zip entry \(entry.name): CRC-32 \(hex(actual)), the archive records \(hex(entry.crc32)): the file is corrupt")
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as zip uses it.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return c ^ 0xFFFF_FFFF
    }
}
