import Foundation
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#endif

/// What `duplex serve` answers for paths other than /api/chat, /healthz and /metrics: the page
/// built into the binary (`WebClientFiles`), a folder (`--static DIR`, e.g. Kyutai's client
/// build), or nothing (`--static none`: 404).
///
/// No request can reach a file outside the folder: the path is decoded once and refused (404)
/// when it holds `..`, a segment starting with `.`, an encoded `/` or `\`, a `%` left after
/// decoding (double encoding), a NUL or a backslash; what remains is joined to the folder, its real
/// path resolved (symlinks followed) and refused unless it is inside the folder's real path. A
/// directory serves its index.html or nothing; there are no listings.
public enum StaticSite: Sendable, Equatable {
    case builtIn
    /// The folder's real path (symlinks resolved), as `folder(_:)` makes it.
    case directory(String)
    case none

    /// `--static DIR`; "none" is `.none`. Throws when DIR is missing or not a folder.
    public static func option(_ value: String) throws -> StaticSite {
        value == "none" ? .none : try folder(value)
    }

    public static func folder(_ path: String) throws -> StaticSite {
        guard let real = realPath(path) else { throw ChatServerError("--static \(path): no such folder") }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: real, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ChatServerError("--static \(path): not a folder")
        }
        return .directory(real)
    }

    public enum Answer: Equatable, Sendable {
        case file(contentType: String, bytes: [UInt8])
        case notFound
        case badRequest
    }

    /// Files larger than this are not served (a web client's build is a few MiB).
    static let maxFileBytes = 64 << 20

    /// The answer for a request target (`/path?query`, undecoded, as the request line has it).
    public func answer(uri: String) -> Answer {
        if case .none = self { return .notFound }
        let raw = String(uri.prefix { $0 != "?" && $0 != "#" })
        guard let segments = Self.segments(raw) else { return raw.utf8.contains(0) ? .badRequest : .notFound }
        switch self {
        case .none: return .notFound
        case .builtIn:
            let key = "/" + segments.joined(separator: "/")
            for candidate in [key, (key == "/" ? "" : key) + "/index.html"] {
                if let file = WebClientFiles.files[candidate] { return .file(contentType: file.contentType, bytes: file.bytes) }
            }
            return .notFound
        case .directory(let root):
            guard var real = Self.realPath(([root] + segments).joined(separator: "/")), Self.inside(real, root) else { return .notFound }
            if Self.isDirectory(real) {
                guard let index = Self.realPath(real + "/index.html"), Self.inside(index, root) else { return .notFound }
                real = index
            }
            var info = stat()
            guard stat(real, &info) == 0, info.st_mode & S_IFMT == S_IFREG, Int(info.st_size) <= Self.maxFileBytes,
                  let data = FileManager.default.contents(atPath: real)
            else { return .notFound }
            return .file(contentType: Self.contentType(real), bytes: Array(data))
        }
    }

    /// The decoded, checked segments of a path; nil when it must not be served.
    static func segments(_ raw: String) -> [String]? {
        guard raw.hasPrefix("/"), !raw.utf8.contains(0), !raw.contains("\\") else { return nil }
        let lower = raw.lowercased()
        for encoded in ["%2f", "%5c", "%00"] where lower.contains(encoded) { return nil }
        guard let decoded = raw.removingPercentEncoding, !decoded.contains("%"), !decoded.utf8.contains(0), !decoded.contains("\\") else {
            return nil
        }
        var out: [String] = []
        for segment in decoded.split(separator: "/") {
            if segment == "." { continue }
            if segment.hasPrefix(".") { return nil }  // "..", and hidden files (.git, .env)
            out.append(String(segment))
        }
        return out
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func inside(_ path: String, _ root: String) -> Bool {
        path == root || path.hasPrefix(root.hasSuffix("/") ? root : root + "/")
    }

    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }

    static func contentType(_ path: String) -> String {
        switch (path as NSString).pathExtension.lowercased() {
        case "html", "htm": return "text/html; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "json", "map": return "application/json"
        case "wasm": return "application/wasm"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "jpg", "jpeg": return "image/jpeg"
        case "webp": return "image/webp"
        case "ico": return "image/x-icon"
        case "txt": return "text/plain; charset=utf-8"
        case "woff2": return "font/woff2"
        case "woff": return "font/woff"
        case "wav": return "audio/wav"
        case "ogg", "opus": return "audio/ogg"
        case "webmanifest": return "application/manifest+json"
        default: return "application/octet-stream"
        }
    }
}

extension HTTPRoutes {
    /// A request NIO cannot parse (a NUL in the path, a target without a leading /) has had its
    /// 400 from HTTPServerProtocolErrorHandler; close instead of waiting for the client to.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError { context.close(promise: nil) }
        context.fireErrorCaught(error)
    }

    /// Answers a GET or HEAD from the static site; false when it has nothing for this path (the
    /// caller sends its 404). Other methods get 405.
    func serveStatic(_ head: HTTPRequestHead, site: StaticSite, context: ChannelHandlerContext) -> Bool {
        guard head.method == .GET || head.method == .HEAD else {
            if case .none = site { return false }
            sendStatic(context, .methodNotAllowed, "text/plain; charset=utf-8", Array("GET or HEAD only\n".utf8), bodyless: false, extra: [("Allow", "GET, HEAD")])
            return true
        }
        switch site.answer(uri: head.uri) {
        case .notFound: return false
        case .badRequest:
            sendStatic(context, .badRequest, "text/plain; charset=utf-8", Array("bad request path\n".utf8), bodyless: head.method == .HEAD)
        case .file(let type, let bytes):
            sendStatic(context, .ok, type, bytes, bodyless: head.method == .HEAD)
        }
        return true
    }

    private func sendStatic(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ type: String, _ bytes: [UInt8],
                            bodyless: Bool, extra: [(String, String)] = []) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(bytes.count))
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        headers.add(name: "Cache-Control", value: "no-cache")
        headers.add(name: "Connection", value: "close")
        for (name, value) in extra { headers.add(name: name, value: value) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !bodyless {
            var buffer = context.channel.allocator.buffer(capacity: bytes.count)
            buffer.writeBytes(bytes)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}
