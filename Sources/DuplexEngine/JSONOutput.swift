import Foundation

/// JSON for machines, always valid: objects go through `JSONSerialization` (never string
/// concatenation, which lets a NaN out as a bare `nan`), with every non-finite number written
/// as `null` and keys sorted so that runs diff cleanly.
public enum JSONOutput {
    /// `value` with NaN/±Inf (Double or Float) replaced by `NSNull`, through nested dictionaries and arrays.
    public static func sanitized(_ value: Any) -> Any {
        switch value {
        case let d as Double: return d.isFinite ? d : NSNull()
        case let f as Float: return f.isFinite ? Double(f) : NSNull()
        case let dict as [String: Any]: return dict.mapValues { sanitized($0) }
        case let array as [Any]: return array.map { sanitized($0) }
        default: return value
        }
    }

    /// One line of JSON (no trailing newline), or indented for people (`pretty`).
    public static func line(_ object: [String: Any], pretty: Bool = false) throws -> String {
        let options: JSONSerialization.WritingOptions = pretty ? [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted] : [.sortedKeys, .withoutEscapingSlashes]
        let data = try JSONSerialization.data(withJSONObject: sanitized(object), options: options)
        return String(decoding: data, as: UTF8.self)
    }
}
