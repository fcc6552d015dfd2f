package import PostgresNIO

/// What the stores throw, each case named for what went wrong and where.
public enum StoreError: Error, Sendable, CustomStringConvertible, Equatable {
    case notFound(String)
    case conflict(String)
    case invalid(field: String, message: String)
    case forbidden(String)
    case unreachable(url: String, underlying: String)
    /// The database could not finish this now for other work in its way (a deadlock, a serialization failure, a
    /// lock not granted in time); nothing was changed, and the same request may succeed at once.
    case busy(String)
    case migration(String)
    /// The database refused a scheduling write: another allotd holds the lease now, or this one's lapsed.
    case fenced(String)
    /// The database holds a value this version of Allot does not know (a newer allotd wrote it, or a hand edit).
    case unknownValue(column: String, value: String)

    public var description: String {
        switch self {
        case .notFound(let what): "\(what) not found"
        case .conflict(let message): message
        case .invalid(let field, let message): "\(field): \(message)"
        case .forbidden(let message): message
        case .unreachable(let url, let underlying):
            // PostgresNIO reports a wrong password as a tripped circuit breaker: say what it usually means.
            "cannot reach PostgreSQL at \(url) (check that it runs and that the user and password are right): \(underlying)"
        case .busy(let why): "the database could not finish this now (\(why)); nothing was changed: try again"
        case .migration(let message): message
        case .fenced(let message): message
        case .unknownValue(let column, let value): "the database holds '\(value)' in \(column), which this allotd does not know"
        }
    }

    /// The SQLSTATE of a PostgreSQL error none of these cases covers, for an answer that names it (nil otherwise).
    public static func sqlState(of error: any Error) -> String? { (error as? PSQLError)?.sqlState }
}

extension PSQLError {
    /// The SQLSTATE of a server error, e.g. 23505 for a unique violation.
    package var sqlState: String? { self.serverInfo?[.sqlState] }
    package var constraint: String? { self.serverInfo?[.constraintName] }
    package var serverMessage: String? { self.serverInfo?[.message] }
}
