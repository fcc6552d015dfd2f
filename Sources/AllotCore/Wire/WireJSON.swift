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
        d.dateDecodingStrategy = .iso8601
        return d
    }()
}
