public import Foundation

/// Where the checkout is, found from this file's path: for tests that read `Policies/`, `ops/` or `Migrations/`.
public enum Repository {
    public static var root: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    public static var migrations: String { self.root + "/Migrations" }
}
