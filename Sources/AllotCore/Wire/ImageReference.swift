/// An OCI image as a job names it: `NAME[:TAG]`, where NAME is a path of lower-case words (`nvidia/pytorch`)
/// under the node's image folder and TAG the layout's `org.opencontainers.image.ref.name` (default `latest`).
public struct ImageReference: Hashable, Sendable, CustomStringConvertible {
    public var name: String
    public var tag: String

    /// Parses a reference; nil when `problem` has something to say.
    public init?(_ text: String) {
        guard Self.problem(text) == nil else { return nil }
        let lastSlash = text.lastIndex(of: "/")
        let searchFrom = lastSlash.map { text.index(after: $0) } ?? text.startIndex
        if let colon = text[searchFrom...].firstIndex(of: ":") {
            self.name = String(text[..<colon])
            self.tag = String(text[text.index(after: colon)...])
        } else {
            self.name = text
            self.tag = "latest"
        }
    }

    public var description: String { "\(self.name):\(self.tag)" }

    /// Why `text` is not an image reference, or nil. Names never leave the image folder: no `..`, no leading `/`.
    public static func problem(_ text: String) -> String? {
        if text.isEmpty || text.utf8.count > 255 { return "must be NAME[:TAG] of at most 255 characters" }
        let lastSlash = text.lastIndex(of: "/")
        let searchFrom = lastSlash.map { text.index(after: $0) } ?? text.startIndex
        let colon = text[searchFrom...].firstIndex(of: ":")
        let name = colon.map { String(text[..<$0]) } ?? text
        let tag = colon.map { String(text[text.index(after: $0)...]) }
        let nameChars = Set("abcdefghijklmnopqrstuvwxyz0123456789._-/")
        let tagChars = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        if !name.allSatisfy({ nameChars.contains($0) }) || parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." || $0.hasPrefix(".") }) {
            return "'\(text.prefix(80))': the name must be lower-case words separated by '/' (as nvidia/pytorch), without '..'"
        }
        if let tag, tag.isEmpty || tag.count > 128 || !tag.allSatisfy({ tagChars.contains($0) }) {
            return "'\(text.prefix(80))': the tag must be 1–128 letters, digits, '.', '_' or '-'"
        }
        return nil
    }
}
