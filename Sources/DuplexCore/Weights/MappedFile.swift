import Foundation

/// A whole weight file mapped read-only (MAP_PRIVATE): what every reader starts from. Opening
/// refuses what cannot be a weight file (missing, a directory, empty) with the reader's wording,
/// so the safetensors and GGUF readers differ only in what they parse from the bytes.
enum MappedFile {
    /// The map of `path` and its size; `kind` names the expected file ("a .gguf file") and
    /// `format` the format ("GGUF") in the messages. The caller owns the map (munmap).
    static func map(_ path: String, kind: String, format: String) throws -> (UnsafeRawPointer, Int) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw WeightFileError(path: path, .io, "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw WeightFileError(path: path, .io, "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            let what = (info.st_mode & S_IFMT) == S_IFDIR ? "a directory" : "not a regular file"
            throw WeightFileError(path: path, .io, "is \(what), expected \(kind)")
        }
        let size = Int(info.st_size)
        if size == 0 { throw WeightFileError(path: path, .empty, "empty file (0 bytes): not a \(format) file") }
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != MAP_FAILED else {
            throw WeightFileError(path: path, .io, "cannot memory-map \(size) bytes: \(String(cString: strerror(errno)))")
        }
        return (UnsafeRawPointer(map), size)
    }
}
