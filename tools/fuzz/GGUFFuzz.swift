// libFuzzer entry for the GGUF header parser (built by tools/fuzz/gguf.sh into the same module as
// GGUF*.swift, hence no import). Besides "never traps", it checks that whatever the parser accepts
// is what it promises: every tensor inside the input, aligned, sized by type × shape, apart from
// the others; and that the writer can write it back and the re-read writes the same bytes again.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUFHeader(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let header: GGUFFile.Header
    do {
        header = try GGUFFile.parseHeader(input, path: "fuzz-input")
    } catch let error as WeightFileError {
        precondition(!error.problems.isEmpty, "an error without problems")
        _ = error.description
        return 0
    } catch {
        preconditionFailure("parseHeader threw \(type(of: error)), not a WeightFileError")
    }
    checkAccepted(header, input)
    return 0
}

func checkAccepted(_ h: GGUFFile.Header, _ input: UnsafeRawBufferPointer) {
    precondition(h.version == 2 || h.version == 3)
    precondition(h.alignment > 0 && h.alignment & (h.alignment - 1) == 0 && h.alignment <= GGUFFile.maxAlignment)
    precondition(h.dataOffset % h.alignment == 0)
    precondition(h.names.count == h.entries.count && Set(h.names).count == h.names.count)
    precondition(h.metadataKeys.count == h.metadata.count && Set(h.metadataKeys) == Set(h.metadata.keys))
    var previousEnd = h.dataOffset
    for entry in h.names.map({ h.entries[$0]! }).sorted(by: { $0.range.lowerBound < $1.range.lowerBound }) {
        precondition(entry.range.lowerBound >= previousEnd, "\(entry.name) overlaps or precedes the data section")
        precondition(entry.range.upperBound <= input.count, "\(entry.name) ends past the input")
        precondition((entry.range.lowerBound - h.dataOffset) % h.alignment == 0, "\(entry.name) misaligned")
        precondition((1...4).contains(entry.shape.count) && entry.shape.allSatisfy { $0 >= 1 })
        precondition(entry.type.byteCount(shape: entry.shape) == entry.range.count, "\(entry.name) mis-sized")
        previousEnd = entry.range.upperBound
    }

    let tensors = h.names.map { name in
        let e = h.entries[name]!
        return GGUFWriter.Tensor(name: name, type: e.type, shape: e.shape)
    }
    func rewrite(_ h: GGUFFile.Header, _ from: UnsafeRawBufferPointer) -> [UInt8] {
        do {
            return try GGUFWriter.serialized(version: h.version, metadata: h.metadataKeys.map { ($0, h.metadata[$0]!) },
                                             alignment: h.alignment, tensors: tensors) { i, sink in
                let r = h.entries[tensors[i].name]!.range
                try sink(UnsafeRawBufferPointer(rebasing: from[r]))
            }
        } catch {
            preconditionFailure("the writer refused what the reader accepted: \(error)")
        }
    }
    let once = rewrite(h, input)
    once.withUnsafeBytes { bytes in
        let again: GGUFFile.Header
        do { again = try GGUFFile.parseHeader(bytes, path: "rewritten") } catch { preconditionFailure("a rewritten file does not parse: \(error)") }
        precondition(again.names == h.names && again.metadataKeys == h.metadataKeys)
        precondition(rewrite(again, bytes) == once, "rewriting the rewritten file changed it")
    }
}
