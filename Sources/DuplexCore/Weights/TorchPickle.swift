import Foundation

/// The `data.pkl` of a `torch.save` archive, read as data. A pickle is a program for Python's
/// pickle machine, and `GLOBAL` + `REDUCE` can call anything (`os.system`); this reader
/// interprets only the opcodes torch.save emits for a dict of tensors and plain values
/// (protocol 2, plus protocol 4's framing), and only three kinds of global: the tensor
/// constructor `torch._utils._rebuild_tensor_v2`, `collections.OrderedDict` and the typed storage
/// classes `torch.FloatStorage`, `torch.BFloat16Storage`, …. Nothing is ever called: a REDUCE of
/// the tensor constructor records where the tensor's values lie, nothing more. Any other
/// global or opcode is refused with its byte offset. Sizes, counts and nesting are bounded.
struct TorchPickle {
    enum Global: Equatable {
        case rebuildTensorV2, orderedDict
        case storage(DType)
    }

    /// A persistent id `('storage', torch.XStorage, key, location, numel)`: the storage's values
    /// are the archive member `<prefix>/data/<key>`.
    struct StorageRef: Equatable {
        let key: String
        let dtype: DType
        let count: Int
        let location: String
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, …)`, in elements of the storage.
    struct TensorRef: Equatable {
        let storage: StorageRef
        let offset: Int
        let shape: [Int]
        let strides: [Int]
    }

    /// A value on the pickle machine's stack. Lists and dicts are mutable and may be shared
    /// through the memo, so they live in `containers` and are referred to by index.
    enum Value {
        case none, bool(Bool), int(Int64), float(Double), string(String)
        case tuple([Value]), list(Int), dict(Int)
        case global(Global), storage(StorageRef), tensor(TensorRef)
    }

    enum Container {
        case list([Value]), dict([(key: Value, value: Value)])
    }

    static let maxPickleBytes = 64 << 20
    static let maxStack = 100_000
    static let maxMemo = 100_000
    static let maxStringBytes = 1 << 20
    static let maxItems = 1_000_000
    static let maxRank = 16

    /// The object the pickle builds (its STOP value).
    let root: Value
    let containers: [Container]

    static let storageTypes: [String: DType] = [
        "FloatStorage": .f32, "DoubleStorage": .f64, "HalfStorage": .f16, "BFloat16Storage": .bf16,
        "LongStorage": .i64, "IntStorage": .i32, "ShortStorage": .i16, "CharStorage": .i8,
        "ByteStorage": .u8, "BoolStorage": .bool,
    ]

    init(_ p: UnsafeRawBufferPointer, fail: ZipArchive.Fail) throws {
        guard p.count <= Self.maxPickleBytes else {
            throw fail(.badPickle, "data.pkl is \(p.count) bytes (limit \(Self.maxPickleBytes))")
        }
        var pos = 0
        var stack: [Value] = []
        var marks: [Int] = []
        var memo: [Int: Value] = [:]
        var containers: [Container] = []
        var items = 0

        while true {
            guard pos < p.count else { throw fail(.badPickle, "data.pkl ends at byte \(pos) without a STOP opcode: truncated") }
            let at = pos, op = p[pos]
            pos += 1
            func bad(_ message: String) -> WeightFileError {
                fail(.badPickle, "data.pkl offset \(at), opcode \(Self.describe(op)): \(message)")
            }
            func take(_ n: Int) throws -> UnsafeRawBufferPointer {
                guard n >= 0, n <= p.count - pos else { throw bad("needs \(n) more bytes but data.pkl ends at \(p.count): truncated") }
                defer { pos += n }
                return UnsafeRawBufferPointer(rebasing: p[pos..<(pos + n)])
            }
            func uint(_ n: Int) throws -> Int {
                let b = try take(n)
                return b.reversed().reduce(0) { $0 << 8 | Int($1) }
            }
            func text(_ n: Int) throws -> String {
                guard n <= Self.maxStringBytes else { throw bad("a \(n)-byte string (limit \(Self.maxStringBytes))") }
                guard let s = String(validating: try take(n), as: UTF8.self) else { throw bad("string is not UTF-8") }
                return s
            }
            func line() throws -> String {
                var n = 0
                while pos + n < p.count, p[pos + n] != 0x0A, n <= 256 { n += 1 }
                guard pos + n < p.count, p[pos + n] == 0x0A else { throw bad("unterminated or over-long name") }
                let s = try text(n)
                pos += 1
                return s
            }
            func push(_ v: Value) throws {
                guard stack.count < Self.maxStack else { throw bad("more than \(Self.maxStack) values on the stack") }
                stack.append(v)
            }
            func pop() throws -> Value {
                guard let v = stack.popLast(), stack.count >= (marks.last ?? 0) else { throw bad("pops an empty stack") }
                return v
            }
            func popMark() throws -> [Value] {
                guard let m = marks.popLast() else { throw bad("no MARK to pop to") }
                defer { stack.removeSubrange(m...) }
                return Array(stack[m...])
            }
            func new(_ c: Container) throws -> Int {
                guard containers.count < Self.maxItems else { throw bad("more than \(Self.maxItems) containers") }
                containers.append(c)
                return containers.count - 1
            }
            func count(_ n: Int) throws {
                items += n
                guard items <= Self.maxItems else { throw bad("more than \(Self.maxItems) items in lists and dicts") }
            }
            func memoize(_ i: Int) throws {
                guard let top = stack.last, stack.count > (marks.last ?? -1) else { throw bad("memoizes an empty stack") }
                guard memo.count < Self.maxMemo || memo[i] != nil else { throw bad("more than \(Self.maxMemo) memo entries") }
                memo[i] = top
            }
            func recall(_ i: Int) throws {
                guard let v = memo[i] else { throw bad("memo entry \(i) was never stored") }
                try push(v)
            }
            func setItems(_ pairs: [Value]) throws {
                guard pairs.count % 2 == 0 else { throw bad("an odd number of keys and values") }
                guard stack.count > (marks.last ?? 0), case .dict(let id)? = stack.last, case .dict(var d) = containers[id] else {
                    throw bad("target is not a dict")
                }
                try count(pairs.count / 2)
                containers[id] = .list([])
                for i in stride(from: 0, to: pairs.count, by: 2) { d.append((pairs[i], pairs[i + 1])) }
                containers[id] = .dict(d)
            }
            func append(_ values: [Value]) throws {
                guard stack.count > (marks.last ?? 0), case .list(let id)? = stack.last, case .list(var l) = containers[id] else {
                    throw bad("target is not a list")
                }
                try count(values.count)
                containers[id] = .list([])
                l += values
                containers[id] = .list(l)
            }
            func global(_ module: String, _ name: String) throws -> Global {
                switch (module, name) {
                case ("torch._utils", "_rebuild_tensor_v2"): return .rebuildTensorV2
                case ("collections", "OrderedDict"): return .orderedDict
                case ("torch", let n) where Self.storageTypes[n] != nil: return .storage(Self.storageTypes[n]!)
                default:
                    throw fail(.forbiddenGlobal,
                        "data.pkl offset \(at): GLOBAL \(module).\(name) is not one torch.save writes for tensors "
                        + "(allowed: torch._utils._rebuild_tensor_v2, collections.OrderedDict, torch.*Storage); "
                        + "refusing the file (nothing in it is executed)")
                }
            }

            switch op {
            case 0x80:  // PROTO
                let v = try uint(1)
                guard (2...5).contains(v) else { throw bad("pickle protocol \(v) (torch.save writes 2)") }
            case 0x95: _ = try take(8)  // FRAME: a length hint
            case 0x2E:  // STOP
                guard marks.isEmpty, stack.count == 1 else { throw bad("\(stack.count) values and \(marks.count) marks left at STOP") }
                root = stack[0]
                self.containers = containers
                return
            case 0x28:  // MARK
                guard marks.count < Self.maxStack else { throw bad("more than \(Self.maxStack) open marks") }
                marks.append(stack.count)
            case 0x7D: try push(.dict(try new(.dict([]))))  // EMPTY_DICT
            case 0x5D: try push(.list(try new(.list([]))))  // EMPTY_LIST
            case 0x29: try push(.tuple([]))  // EMPTY_TUPLE
            case 0x4E: try push(.none)
            case 0x88: try push(.bool(true))
            case 0x89: try push(.bool(false))
            case 0x4B: try push(.int(Int64(try uint(1))))  // BININT1
            case 0x4D: try push(.int(Int64(try uint(2))))  // BININT2
            case 0x4A: try push(.int(Int64(Int32(truncatingIfNeeded: try uint(4)))))  // BININT
            case 0x8A:  // LONG1
                let n = try uint(1)
                guard n <= 8 else { throw bad("a \(n)-byte integer (at most 8 are read)") }
                let b = try take(n)
                var v: Int64 = n > 0 && b[n - 1] & 0x80 != 0 ? -1 : 0
                for byte in b.reversed() { v = v << 8 | Int64(byte) }
                try push(.int(v))
            case 0x47:  // BINFLOAT, big-endian
                let b = try take(8)
                try push(.float(Double(bitPattern: b.reduce(UInt64(0)) { $0 << 8 | UInt64($1) })))
            case 0x58: try push(.string(try text(try uint(4))))  // BINUNICODE
            case 0x8C: try push(.string(try text(try uint(1))))  // SHORT_BINUNICODE
            case 0x71: try memoize(try uint(1))  // BINPUT
            case 0x72: try memoize(try uint(4))  // LONG_BINPUT
            case 0x94: try memoize(memo.count)  // MEMOIZE
            case 0x68: try recall(try uint(1))  // BINGET
            case 0x6A: try recall(try uint(4))  // LONG_BINGET
            case 0x63:  // GLOBAL module\nname\n
                let module = try line()
                try push(.global(try global(module, try line())))
            case 0x93:  // STACK_GLOBAL
                guard case .string(let name) = try pop(), case .string(let module) = try pop() else { throw bad("needs two strings") }
                try push(.global(try global(module, name)))
            case 0x74: try push(.tuple(try popMark()))  // TUPLE
            case 0x85: try push(.tuple([try pop()]))
            case 0x86:
                let b = try pop()
                try push(.tuple([try pop(), b]))
            case 0x87:
                let c = try pop(), b = try pop()
                try push(.tuple([try pop(), b, c]))
            case 0x73:  // SETITEM
                let v = try pop()
                try setItems([try pop(), v])
            case 0x75: try setItems(try popMark())  // SETITEMS
            case 0x61: try append([try pop()])  // APPEND
            case 0x65: try append(try popMark())  // APPENDS
            case 0x51:  // BINPERSID
                try push(.storage(try Self.storage(try pop(), bad)))
            case 0x52:  // REDUCE
                let args = try pop(), callable = try pop()
                guard case .tuple(let a) = args else { throw bad("arguments are not a tuple") }
                switch callable {
                case .global(.orderedDict):
                    guard a.isEmpty else { throw bad("OrderedDict called with \(a.count) arguments (torch.save writes OrderedDict())") }
                    try push(.dict(try new(.dict([]))))
                case .global(.rebuildTensorV2):
                    try push(.tensor(try Self.tensor(a, containers, bad)))
                default:
                    throw bad("calls something other than torch._utils._rebuild_tensor_v2 or collections.OrderedDict")
                }
            case 0x62:  // BUILD: only the empty state torch leaves on plain objects
                let state = try pop()
                guard stack.count > (marks.last ?? 0) else { throw bad("no object to build") }
                guard Self.isEmpty(state, containers) else { throw bad("sets object state, which plain tensors never have") }
            default:
                throw fail(.badPickle, "data.pkl offset \(at): opcode \(Self.describe(op)) is not one torch.save writes "
                    + "for a dict of tensors; refusing the file (nothing in it is executed)")
            }
        }
    }

    private static func isEmpty(_ v: Value, _ containers: [Container]) -> Bool {
        switch v {
        case .none: return true
        case .tuple(let t): return t.isEmpty
        case .dict(let id): if case .dict(let d) = containers[id] { return d.isEmpty } else { return false }
        default: return false
        }
    }

    private static func storage(_ pid: Value, _ bad: (String) -> WeightFileError) throws -> StorageRef {
        guard case .tuple(let t) = pid, t.count == 5, case .string("storage") = t[0],
              case .global(.storage(let dtype)) = t[1], case .string(let key) = t[2],
              case .string(let location) = t[3], case .int(let count) = t[4] else {
            throw bad("persistent id is not ('storage', torch.XStorage, key, location, numel)")
        }
        guard !key.isEmpty, key.utf8.count <= 64, key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
            throw bad("storage key \"\(key.prefix(64))\" is not a short name")
        }
        guard count >= 0, count <= Int64(Int32.max) else { throw bad("storage of \(count) elements") }
        return StorageRef(key: key, dtype: dtype, count: Int(count), location: location)
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`.
    private static func tensor(_ a: [Value], _ containers: [Container], _ bad: (String) -> WeightFileError) throws -> TensorRef {
        guard a.count == 6 || a.count == 7, case .storage(let storage) = a[0], case .int(let offset) = a[1],
              case .tuple(let size) = a[2], case .tuple(let stride) = a[3], case .bool = a[4] else {
            throw bad("_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, requires_grad, hooks)")
        }
        guard isEmpty(a[5], containers) else { throw bad("tensor with backward hooks") }
        if a.count == 7 { guard isEmpty(a[6], containers) else { throw bad("tensor with Python metadata") } }
        func ints(_ t: [Value], _ what: String) throws -> [Int] {
            try t.map {
                guard case .int(let v) = $0, v >= 0, v <= Int64(Int32.max) else { throw bad("\(what) holds a value that is not a size") }
                return Int(v)
            }
        }
        let shape = try ints(size, "size"), strides = try ints(stride, "stride")
        guard shape.count == strides.count, shape.count <= maxRank else {
            throw bad("size \(shape) and stride \(strides) of different or excessive rank")
        }
        guard offset >= 0, offset <= Int64(Int32.max) else { throw bad("storage offset \(offset)") }
        return TensorRef(storage: storage, offset: Int(offset), shape: shape, strides: strides)
    }

    static let opcodeNames: [UInt8: String] = [
        0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT", 0x49: "INT",
        0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2", 0x4E: "NONE", 0x50: "PERSID",
        0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING", 0x54: "BINSTRING", 0x55: "SHORT_BINSTRING",
        0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND", 0x62: "BUILD", 0x63: "GLOBAL", 0x64: "DICT",
        0x7D: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET", 0x68: "BINGET", 0x69: "INST", 0x6A: "LONG_BINGET",
        0x6C: "LIST", 0x5D: "EMPTY_LIST", 0x6F: "OBJ", 0x70: "PUT", 0x71: "BINPUT", 0x72: "LONG_BINPUT",
        0x73: "SETITEM", 0x74: "TUPLE", 0x29: "EMPTY_TUPLE", 0x75: "SETITEMS", 0x47: "BINFLOAT", 0x80: "PROTO",
        0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3",
        0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8A: "LONG1", 0x8B: "LONG4", 0x42: "BINBYTES", 0x43: "SHORT_BINBYTES",
        0x8C: "SHORT_BINUNICODE", 0x8D: "BINUNICODE8", 0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS",
        0x91: "FROZENSET", 0x92: "NEWOBJ_EX", 0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME",
        0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
    ]

    /// "0x69 INST", "0xff (not a pickle opcode)".
    static func describe(_ op: UInt8) -> String {
        String(format: "0x%02x ", op) + (opcodeNames[op] ?? "(not a pickle opcode)")
    }
}
