/// A state name read from the database as the core's enum; a name this allotd does not know is refused, never
/// replaced by a default.
func decoded<E: RawRepresentable>(_ raw: String, _ column: String) throws(StoreError) -> E where E.RawValue == String {
    guard let value = E(rawValue: raw) else { throw .unknownValue(column: column, value: raw) }
    return value
}
