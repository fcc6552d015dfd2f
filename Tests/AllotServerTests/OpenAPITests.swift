import AllotCore
import AllotServer
import Foundation
import HTTPTypes
import Testing

/// openapi.yaml and the routes agree: the same operations, the same parameters with the same constraints,
/// the same security; the API tests check responses against its schemas (`OpenAPIDocument.problems`).
@Suite("OpenAPI document agrees with the routes")
struct OpenAPITests {
    static func document() throws -> OpenAPIDocument { try OpenAPIDocument(path: OpenAPIDocument.path) }

    @Test("it is OpenAPI 3.1 and lists exactly the routes allotd serves, by method, path and operationId")
    func operations() throws {
        let doc = try Self.document()
        #expect(doc.root["openapi"]?.string?.hasPrefix("3.1") == true)
        let documented = Set(doc.operations.map { "\($0.method) \($0.path)" })
        let served = Set(Endpoint.allCases.map { "\($0.method.rawValue) \($0.templatedPath)" })
        #expect(documented.subtracting(served).isEmpty, "documented but not served: \(documented.subtracting(served).sorted())")
        #expect(served.subtracting(documented).isEmpty, "served but not documented: \(served.subtracting(documented).sorted())")
        for e in Endpoint.allCases {
            #expect(doc.operation(e)?["operationId"]?.string == e.caseName, "\(e.rawValue): operationId")
        }
    }

    @Test("each route's query and path parameters are the document's, with the same constraints")
    func parameters() throws {
        let doc = try Self.document()
        for e in Endpoint.allCases {
            let params = doc.parameters(e)
            let query = params.filter { $0["in"]?.string == "query" }
            let path = params.filter { $0["in"]?.string == "path" }
            #expect(Set(query.compactMap { $0["name"]?.string }) == Set(e.queryParameters.map(\.name)), "\(e.rawValue): query parameters")
            let variables = e.path.split(separator: "/").filter { $0.hasPrefix(":") }.map { String($0.dropFirst()) }
            #expect(Set(path.compactMap { $0["name"]?.string }) == Set(variables), "\(e.rawValue): path parameters")
            for p in path { #expect(p["required"] == .bool(true), "\(e.rawValue): path parameter \(p["name"]?.string ?? "?") must be required") }
            for declared in e.queryParameters {
                guard let p = query.first(where: { $0["name"]?.string == declared.name }) else { continue }
                let schema = doc.resolve(p["schema"] ?? .null)
                let at = "\(e.rawValue) ?\(declared.name)"
                switch declared.kind {
                case .whole(let range):
                    #expect(schema["type"]?.string == "integer", "\(at): type")
                    #expect(schema["minimum"]?.double == Double(range.lowerBound), "\(at): minimum")
                    if range.upperBound != .max { #expect(schema["maximum"]?.double == Double(range.upperBound), "\(at): maximum") }
                case .flag:
                    #expect(schema["type"]?.string == "boolean", "\(at): type")
                case .choice(let words):
                    #expect(Set(schema["enum"]?.array?.compactMap(\.string) ?? []) == Set(words), "\(at): enum")
                case .name:
                    #expect(schema["type"]?.string == "string" && schema["maxLength"]?.double == 128, "\(at): a name of at most 128")
                case .month:
                    #expect(schema["pattern"]?.string != nil, "\(at): a pattern for YYYY-MM")
                case .time:
                    #expect(schema["format"]?.string == "date-time", "\(at): format date-time")
                }
            }
        }
    }

    @Test("public routes need no token; the others document 401 and 403; routes that read a body document 400 and 413")
    func securityAndErrors() throws {
        let doc = try Self.document()
        let bodies: Set<Endpoint> = [
            .login, .submitJob, .addNode, .enrolNode, .restoreGPU, .drain, .addMaintenance, .register, .heartbeat, .applyPolicy, .createToken,
            .verifyAuditAgainst,
        ]
        for e in Endpoint.allCases {
            guard let op = doc.operation(e) else { continue }
            let rule = Access.rule(e)
            let responses = Set(op["responses"]?.object?.keys.map { $0 } ?? [])
            // x-allot-roles (what ops/fuzz.sh's authorization check reads) is the access table's.
            let documentedRoles = Set(op["x-allot-roles"]?.array?.compactMap(\.string) ?? [])
            #expect(documentedRoles == Set((rule.roles ?? Set(Role.allCases)).map(\.rawValue)), "\(e.rawValue): x-allot-roles")
            if rule.roles == nil {
                #expect(op["security"] == .array([]), "\(e.rawValue) is public: security: []")
            } else {
                #expect(responses.isSuperset(of: ["403"]) && (rule.anonymous || responses.contains("401")), "\(e.rawValue): 401 and 403")
            }
            if bodies.contains(e) {
                #expect(op["requestBody"] != nil, "\(e.rawValue): requestBody")
                #expect(responses.isSuperset(of: ["400", "413"]), "\(e.rawValue): 400 and 413")
            }
            if !e.queryParameters.isEmpty || e.path.contains(":") { #expect(responses.contains("400"), "\(e.rawValue): 400 for its parameters") }
        }
    }
}
