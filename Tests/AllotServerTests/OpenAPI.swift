import AllotServer
import AllotTesting
import Foundation
import HTTPTypes
import Yams

/// A JSON (or YAML) value, as a schema check needs it: numbers that know whether they are whole, booleans
/// that are not numbers.
indirect enum JSONValue: Decodable, Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .integer(i)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    subscript(_ key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }
    var object: [String: JSONValue]? {
        if case .object(let o) = self { return o }
        return nil
    }
    var array: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }
    var double: Double? {
        switch self {
        case .integer(let i): Double(i)
        case .number(let d): d
        default: nil
        }
    }
    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .integer: "integer"
        case .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}

/// The repository's OpenAPI document (`openapi.yaml`), and checks of responses against its schemas: the
/// JSON Schema 2020-12 keywords the document uses (type, properties, required, additionalProperties, items,
/// enum, const, minimum, maximum, minLength, maxLength, pattern, format date-time, oneOf, anyOf, allOf, $ref).
/// Written here because no Swift JSON Schema validator is on the package mirror; schemathesis (ops/fuzz.sh)
/// checks the same document with Python's jsonschema.
struct OpenAPIDocument: Sendable {
    let root: JSONValue
    static let path = Repository.root + "/openapi.yaml"
    static let shared: OpenAPIDocument? = try? OpenAPIDocument(path: Self.path)

    init(path: String) throws {
        self.root = try YAMLDecoder().decode(JSONValue.self, from: try String(contentsOfFile: path, encoding: .utf8))
    }

    /// Every operation: (METHOD, templated path, the operation).
    var operations: [(method: String, path: String, operation: JSONValue)] {
        var out: [(String, String, JSONValue)] = []
        for (path, item) in self.root["paths"]?.object ?? [:] {
            for (method, op) in item.object ?? [:] where ["get", "post", "put", "delete", "patch"].contains(method) {
                out.append((method.uppercased(), path, op))
            }
        }
        return out.sorted { ($0.1, $0.0) < ($1.1, $1.0) }
    }

    func operation(_ endpoint: Endpoint) -> JSONValue? {
        self.root["paths"]?[endpoint.templatedPath]?[endpoint.method.rawValue.lowercased()]
    }

    /// The parameters of an operation (its path item's too), `$ref`s resolved.
    func parameters(_ endpoint: Endpoint) -> [JSONValue] {
        let item = self.root["paths"]?[endpoint.templatedPath]
        let all = (item?["parameters"]?.array ?? []) + (self.operation(endpoint)?["parameters"]?.array ?? [])
        return all.map { self.resolve($0) }
    }

    func resolve(_ value: JSONValue) -> JSONValue {
        guard let ref = value["$ref"]?.string, ref.hasPrefix("#/") else { return value }
        var node: JSONValue? = self.root
        for part in ref.dropFirst(2).split(separator: "/") {
            node = node?[String(part).replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")]
        }
        return node.map(self.resolve) ?? value
    }

    /// Why this response does not agree with the document, or nothing: its status must be documented for the
    /// operation, and a JSON body must match the status's schema.
    func problems(_ endpoint: Endpoint, status: Int, contentType: String?, body: Data) -> [String] {
        guard let op = self.operation(endpoint) else { return ["\(endpoint.rawValue) is not in openapi.yaml"] }
        guard let responses = op["responses"]?.object else { return ["\(endpoint.rawValue) documents no responses"] }
        guard let documented = responses["\(status)"] ?? responses["\(status / 100)XX"] ?? responses["default"] else {
            return ["\(endpoint.rawValue) answered \(status), which openapi.yaml does not list (it lists \(responses.keys.sorted()))"]
        }
        let response = self.resolve(documented)
        guard let content = response["content"]?.object, !content.isEmpty else {
            return body.isEmpty || status == 303 ? [] : ["\(endpoint.rawValue) \(status): a body where openapi.yaml documents none"]
        }
        let type = contentType?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard let media = content[type] else {
            return ["\(endpoint.rawValue) \(status): content type '\(type)' is not documented (\(content.keys.sorted()))"]
        }
        guard type == "application/json", let schema = media["schema"] else { return [] }
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: body)
        } catch {
            return ["\(endpoint.rawValue) \(status): not JSON: \(String(decoding: body.prefix(200), as: UTF8.self))"]
        }
        return self.validate(value, schema, at: "$").map { "\(endpoint.rawValue) \(status): \($0)" }
    }

    /// The ways `value` fails `schema` (empty when it conforms), each with the JSON path where.
    func validate(_ value: JSONValue, _ schemaRef: JSONValue, at path: String) -> [String] {
        let schema = self.resolve(schemaRef)
        guard case .object(let s) = schema else { return schema == .bool(false) ? ["\(path): nothing is allowed here"] : [] }
        var out: [String] = []
        if let types = s["type"] {
            let allowed = types.array?.compactMap(\.string) ?? types.string.map { [$0] } ?? []
            let actual = value.typeName
            if !allowed.contains(actual) && !(actual == "integer" && allowed.contains("number")) {
                return ["\(path): a \(actual), where the document says \(allowed.joined(separator: " or "))"]
            }
        }
        if let options = s["enum"]?.array, !options.contains(value) {
            out.append("\(path): \(Self.show(value)) is not one of \(options.map(Self.show))")
        }
        if let c = s["const"], c != value { out.append("\(path): \(Self.show(value)) is not \(Self.show(c))") }
        if let n = value.double {
            if let min = s["minimum"]?.double, n < min { out.append("\(path): \(n) is below the minimum \(min)") }
            if let max = s["maximum"]?.double, n > max { out.append("\(path): \(n) is above the maximum \(max)") }
        }
        if case .string(let text) = value {
            if let min = s["minLength"]?.double, Double(text.count) < min { out.append("\(path): shorter than \(Int(min))") }
            if let max = s["maxLength"]?.double, Double(text.count) > max { out.append("\(path): longer than \(Int(max))") }
            if let pattern = s["pattern"]?.string, text.range(of: pattern, options: .regularExpression) == nil {
                out.append("\(path): '\(text.prefix(80))' does not match \(pattern)")
            }
            if s["format"]?.string == "date-time", ISO8601DateFormatter().date(from: text) == nil {
                let fractional = ISO8601DateFormatter()
                fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
                if fractional.date(from: text) == nil { out.append("\(path): '\(text.prefix(40))' is not a date-time") }
            }
        }
        if case .object(let o) = value {
            let properties = s["properties"]?.object ?? [:]
            for name in s["required"]?.array?.compactMap(\.string) ?? [] where o[name] == nil {
                out.append("\(path): lacks the required \(name)")
            }
            for (key, v) in o.sorted(by: { $0.key < $1.key }) {
                if let p = properties[key] {
                    out += self.validate(v, p, at: "\(path).\(key)")
                } else if let extra = s["additionalProperties"] {
                    if extra == .bool(false) {
                        out.append("\(path): has \(key), which the document does not list")
                    } else if extra.object != nil {
                        out += self.validate(v, extra, at: "\(path).\(key)")
                    }
                }
            }
        }
        if case .array(let items) = value, let itemSchema = s["items"] {
            for (i, item) in items.enumerated() { out += self.validate(item, itemSchema, at: "\(path)[\(i)]") }
        }
        for part in s["allOf"]?.array ?? [] { out += self.validate(value, part, at: path) }
        if let any = s["anyOf"]?.array, !any.contains(where: { self.validate(value, $0, at: path).isEmpty }) {
            out.append("\(path): matches none of anyOf")
        }
        if let one = s["oneOf"]?.array {
            let matching = one.filter { self.validate(value, $0, at: path).isEmpty }.count
            if matching != 1 { out.append("\(path): matches \(matching) of oneOf, not exactly one") }
        }
        return out
    }

    static func show(_ v: JSONValue) -> String {
        switch v {
        case .string(let s): "'\(s.prefix(60))'"
        case .integer(let i): "\(i)"
        case .number(let d): "\(d)"
        case .bool(let b): "\(b)"
        case .null: "null"
        default: v.typeName
        }
    }
}

extension Endpoint {
    /// The path as OpenAPI writes it (`/v1/jobs/{id}`).
    var templatedPath: String {
        "/" + self.path.split(separator: "/").map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }.joined(separator: "/")
    }

    /// The Swift case name, which is the document's operationId.
    var caseName: String { String(describing: self) }
}
