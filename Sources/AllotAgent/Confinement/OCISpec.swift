/// The part of the OCI runtime specification (config.json, version 1.0) a rank's bundle uses. Written by the
/// agent, read by runc (or any OCI runtime); field names are the specification's.
struct OCISpec: Codable, Sendable {
    struct Process: Codable, Sendable {
        struct User: Codable, Sendable {
            var uid: UInt32
            var gid: UInt32
            var additionalGids: [UInt32]?
        }
        struct Capabilities: Codable, Sendable {
            var bounding: [String] = []
            var effective: [String] = []
            var inheritable: [String] = []
            var permitted: [String] = []
            var ambient: [String] = []
        }
        struct Rlimit: Codable, Sendable {
            var type: String
            var hard: UInt64
            var soft: UInt64
        }
        var terminal = false
        var user: User
        var args: [String]
        var env: [String]
        var cwd: String
        var capabilities = Capabilities()
        var rlimits: [Rlimit]
        var noNewPrivileges = true
    }
    struct Root: Codable, Sendable {
        var path: String
        var readonly: Bool
    }
    struct Mount: Codable, Sendable, Hashable {
        var destination: String
        var type: String
        var source: String
        var options: [String]?
    }
    struct Hook: Codable, Sendable, Hashable {
        var path: String
        var args: [String]?
        var env: [String]?
    }
    struct Hooks: Codable, Sendable {
        var createContainer: [Hook]?
        var startContainer: [Hook]?
    }
    struct Linux: Codable, Sendable {
        struct Namespace: Codable, Sendable { var type: String }
        struct Device: Codable, Sendable, Hashable {
            var path: String
            var type: String
            var major: Int64
            var minor: Int64
            var fileMode: UInt32?
            var uid: UInt32?
            var gid: UInt32?
        }
        struct DeviceRule: Codable, Sendable, Hashable {
            var allow: Bool
            var type: String?
            var major: Int64?
            var minor: Int64?
            var access: String
        }
        struct Resources: Codable, Sendable {
            struct Memory: Codable, Sendable { var limit: Int64 }
            struct CPU: Codable, Sendable {
                var quota: Int64
                var period: UInt64
            }
            struct Pids: Codable, Sendable { var limit: Int64 }
            var devices: [DeviceRule]
            var memory: Memory?
            var cpu: CPU?
            var pids: Pids
        }
        var namespaces: [Namespace]
        var devices: [Device]
        var resources: Resources
        var cgroupsPath: String
        var maskedPaths: [String]
        var readonlyPaths: [String]
        var seccomp: Seccomp?
    }
    struct Seccomp: Codable, Sendable {
        struct Syscall: Codable, Sendable {
            struct Arg: Codable, Sendable {
                var index: UInt
                var value: UInt64
                var valueTwo: UInt64?
                var op: String
            }
            var names: [String]
            var action: String
            var errnoRet: UInt?
            var args: [Arg]?
        }
        var defaultAction: String
        var architectures: [String]?
        var syscalls: [Syscall]
    }
    var ociVersion = "1.0.2"
    var process: Process
    var root: Root
    var hostname: String
    var mounts: [Mount]
    var hooks: Hooks?
    var linux: Linux
}
