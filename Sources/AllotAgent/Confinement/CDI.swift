import AllotCore
import Foundation
import Yams

#if canImport(CDispatch)
    import CDispatch  // where this toolchain's Glibc overlay declares struct stat
#endif

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What the NVIDIA Container Toolkit's Container Device Interface spec (`nvidia-ctk cdi generate`, usually
/// `/etc/cdi/nvidia.yaml`) adds to a container for some GPUs: device nodes, the driver's libraries as mounts,
/// environment, and hooks (the ld.so cache update). Read, not written: the toolkit owns the file.
struct CDIEdits: Sendable {
    var devices: [OCISpec.Linux.Device] = []
    var mounts: [OCISpec.Mount] = []
    var env: [String: String] = [:]
    var hooks: [OCISpec.Hook] = []

    static let none = CDIEdits()

    struct Spec: Decodable {
        struct Edits: Decodable {
            struct DeviceNode: Decodable {
                var path: String
                var hostPath: String?
                var type: String?
                var major: Int64?
                var minor: Int64?
            }
            struct Mount: Decodable {
                var hostPath: String
                var containerPath: String
                var options: [String]?
            }
            struct Hook: Decodable {
                var hookName: String
                var path: String
                var args: [String]?
                var env: [String]?
            }
            var env: [String]?
            var deviceNodes: [DeviceNode]?
            var mounts: [Mount]?
            var hooks: [Hook]?
        }
        struct Device: Decodable {
            var name: String
            var containerEdits: Edits
        }
        var devices: [Device]
        var containerEdits: Edits?
    }

    /// The edits for `gpus` (matched by index or UUID, as the toolkit names devices) and the spec's common ones;
    /// none when the file does not exist. A file that exists but cannot be read is an error: a rank would
    /// otherwise start without its driver.
    static func load(_ path: String, gpus: [GPUInfo]) throws -> CDIEdits {
        guard let data = FileManager.default.contents(atPath: path) else { return .none }
        let spec: Spec
        do {
            spec = try YAMLDecoder().decode(Spec.self, from: String(decoding: data, as: UTF8.self))
        } catch {
            throw SupervisorError.refused("the CDI spec \(path) cannot be read: \(error)")
        }
        let names = Set(gpus.flatMap { ["\($0.index)", $0.uuid] })
        var edits = CDIEdits()
        for e in [spec.containerEdits].compactMap({ $0 }) + spec.devices.filter({ names.contains($0.name) }).map(\.containerEdits) {
            edits.add(e)
        }
        return edits
    }

    private mutating func add(_ e: Spec.Edits) {
        for kv in e.env ?? [] {
            let parts = kv.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { self.env[String(parts[0])] = String(parts[1]) }
        }
        for d in e.deviceNodes ?? [] {
            var major = d.major
            var minor = d.minor
            var type = d.type ?? "c"
            if major == nil || minor == nil {
                var st = stat()
                guard stat(d.hostPath ?? d.path, &st) == 0 else { continue }
                major = Int64((st.st_rdev >> 8) & 0xfff)
                minor = Int64((st.st_rdev & 0xff) | ((st.st_rdev >> 12) & 0xfff00))
                type = (st.st_mode & S_IFMT) == S_IFBLK ? "b" : "c"
            }
            self.devices.append(OCISpec.Linux.Device(path: d.path, type: type, major: major!, minor: minor!, fileMode: 0o666, uid: 0, gid: 0))
        }
        for m in e.mounts ?? [] {
            self.mounts.append(OCISpec.Mount(destination: m.containerPath, type: "bind", source: m.hostPath, options: m.options ?? ["ro", "bind"]))
        }
        for h in e.hooks ?? [] where h.hookName == "createContainer" {
            self.hooks.append(OCISpec.Hook(path: h.path, args: h.args, env: h.env))
        }
    }
}
