/// A byte trie over a fixed key set: the vocabulary pieces (for the Viterbi lattice) and the
/// user-defined symbols (kept intact by the normalizer). Nodes are stored flat; each node's edges
/// are a contiguous run sorted by label.
struct ByteTrie: Sendable {
    private var edgeStart: [Int32] = []
    private var edgeCount: [Int32] = []
    private var edgeLabel: [UInt8] = []
    private var edgeTarget: [Int32] = []
    /// The key's value at a node, or -1 where no key ends.
    private var value: [Int32] = []

    var isEmpty: Bool { value.count <= 1 && (value.first ?? -1) < 0 }

    /// Keys must be distinct.
    init(keys: [(bytes: [UInt8], value: Int32)]) {
        let sorted = keys.sorted { $0.bytes.lexicographicallyPrecedes($1.bytes) }
        _ = build(sorted, sorted.startIndex..<sorted.endIndex, depth: 0)
    }

    private mutating func build(_ keys: [(bytes: [UInt8], value: Int32)], _ range: Range<Int>, depth: Int) -> Int32 {
        let node = Int32(value.count)
        var lo = range.lowerBound
        var nodeValue: Int32 = -1
        // Sorted order puts the key that ends here first.
        if lo < range.upperBound && keys[lo].bytes.count == depth {
            nodeValue = keys[lo].value
            lo += 1
        }
        var groups: [(label: UInt8, range: Range<Int>)] = []
        var i = lo
        while i < range.upperBound {
            let label = keys[i].bytes[depth]
            var j = i + 1
            while j < range.upperBound && keys[j].bytes[depth] == label { j += 1 }
            groups.append((label, i..<j))
            i = j
        }
        value.append(nodeValue)
        edgeStart.append(Int32(edgeLabel.count))
        edgeCount.append(Int32(groups.count))
        let first = edgeLabel.count
        for g in groups {
            edgeLabel.append(g.label)
            edgeTarget.append(-1)
        }
        for (k, g) in groups.enumerated() {
            edgeTarget[first + k] = build(keys, g.range, depth: depth + 1)
        }
        return node
    }

    private func child(_ node: Int32, _ label: UInt8) -> Int32? {
        var lo = Int(edgeStart[Int(node)])
        var hi = lo + Int(edgeCount[Int(node)])
        while lo < hi {
            let mid = (lo + hi) / 2
            let l = edgeLabel[mid]
            if l == label { return edgeTarget[mid] }
            if l < label { lo = mid + 1 } else { hi = mid }
        }
        return nil
    }

    /// Calls `body(end, value)` for every key that is a prefix of `bytes[start...]`, shortest first.
    func forEachPrefix(of bytes: [UInt8], from start: Int, _ body: (Int, Int32) -> Void) {
        guard !value.isEmpty else { return }
        var node: Int32 = 0
        var pos = start
        while pos < bytes.count, let next = child(node, bytes[pos]) {
            node = next
            pos += 1
            let v = value[Int(node)]
            if v >= 0 { body(pos, v) }
        }
    }

    /// Length of the longest key that is a prefix of `bytes[start...]`, 0 if none.
    func longestPrefix(of bytes: [UInt8], from start: Int) -> Int {
        var longest = 0
        forEachPrefix(of: bytes, from: start) { end, _ in longest = end - start }
        return longest
    }
}
