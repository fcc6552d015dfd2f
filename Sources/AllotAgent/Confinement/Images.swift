import AllotCore
import Foundation

/// Root filesystems from OCI image layouts on the node (`DIR/NAME`, tag `TAG`, as `skopeo copy … oci:DIR/NAME:TAG`
/// writes them), unpacked once per manifest digest with umoci and shared, read-only, by every rank that uses it.
struct ImageCache: Sendable {
    let imageDir: String
    let cacheDir: String

    /// The unpacked root filesystem of `text` (`NAME[:TAG]`).
    func rootfs(for text: String) throws -> String {
        guard let ref = ImageReference(text) else {
            throw SupervisorError.refused("image '\(text.prefix(80))': \(ImageReference.problem(text) ?? "")")
        }
        let layout = "\(self.imageDir)/\(ref.name)"
        guard let index = FileManager.default.contents(atPath: "\(layout)/index.json") else {
            throw SupervisorError.refused("image \(ref): no OCI image layout at \(layout) on this node (copy it there with skopeo)")
        }
        struct Index: Decodable {
            struct Manifest: Decodable {
                var digest: String
                var annotations: [String: String]?
            }
            var manifests: [Manifest]
        }
        let manifests = (try? JSONDecoder().decode(Index.self, from: index))?.manifests ?? []
        guard let digest = manifests.first(where: { $0.annotations?["org.opencontainers.image.ref.name"] == ref.tag })?.digest,
            digest.hasPrefix("sha256:"), digest.dropFirst(7).allSatisfy({ $0.isHexDigit })
        else { throw SupervisorError.refused("image \(ref): the layout at \(layout) has no tag '\(ref.tag)'") }
        let cached = "\(self.cacheDir)/\(digest.dropFirst(7))"
        if FileManager.default.fileExists(atPath: "\(cached)/rootfs") { return "\(cached)/rootfs" }

        try FileManager.default.createDirectory(atPath: self.cacheDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let work = "\(self.cacheDir)/.unpack-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: work) }
        guard let umoci = ContainerRuntime.find("umoci") else { throw SupervisorError.refused("image \(ref): umoci is not installed on this node") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: umoci)
        p.arguments = ["unpack", "--image", "\(layout):\(ref.tag)", work]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let said = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw SupervisorError.refused("image \(ref): umoci could not unpack it: \(String(decoding: said, as: UTF8.self).suffix(400))")
        }
        // Renamed into place whole, so a rank never sees half an image; another unpack of it may have won.
        if (try? FileManager.default.moveItem(atPath: work, toPath: cached)) == nil && !FileManager.default.fileExists(atPath: "\(cached)/rootfs") {
            throw SupervisorError.refused("image \(ref): cannot move it into the cache at \(cached)")
        }
        return "\(cached)/rootfs"
    }
}

extension ContainerRuntime {
    /// A program on PATH or in the system folders.
    static func find(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        for dir in (environment["PATH"] ?? "").split(separator: ":").map(String.init) + [
            "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
        ] {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
