public import Foundation

/// The one JSON configuration of the wire: allotd, its agents and the CLI all encode and decode with it
/// (ISO 8601 dates, sorted keys so bodies are stable).
public enum WireJSON {
    public static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    public static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        // RFC 3339 with or without fractional seconds (clients and JSON Schema's date-time send both).
        d.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            if let date = WireJSON.date(text) { return date }
            throw DecodingError.dataCorrupted(
                DecodingError.Context(
                    codingPath: decoder.codingPath, debugDescription: "must be a time like 2026-11-01T00:00:00Z, not '\(text.prefix(40))'"))
        }
        return d
    }()

    /// A time in RFC 3339 (ISO 8601 with a zone), with or without fractional seconds.
    public static func date(_ text: String) -> Date? {
        let plain = ISO8601DateFormatter()
        if let d = plain.date(from: text) { return d }
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return fractional.date(from: text)
    }
}
