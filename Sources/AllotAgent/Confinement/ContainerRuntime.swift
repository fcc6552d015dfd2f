public import AllotCore
public import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// How the agent confines a rank: an OCI container started by a real OCI runtime (runc), under its
/// organisation's account, with its memory, CPU and process limits and only its own GPUs.
///
/// The container has its own pid, mount, ipc and uts namespaces and shares the host's network (so NCCL and the
/// gang's MASTER_ADDR work). Its root is an empty folder with the node's system folders bound read-only (or the
/// job's image, read-only), a private `/tmp`, `/dev/shm` and `/dev`, a writable `/work` of its own, and the job's
/// working directory. The agent's state folder, its token and every other rank's files are not in it.
public struct ContainerRuntime: Sendable {
    /// A host folder bound into every container.
    public struct Bind: Sendable, Hashable {
        public var path: String
        public var writable: Bool
        public init(path: String, writable: Bool = false) {
            self.path = path
            self.writable = writable
        }

        /// `PATH`, `PATH:ro` or `PATH:rw`.
        public init?(_ text: String) {
            var path = text
            var writable = false
            if text.hasSuffix(":rw") {
                path = String(text.dropLast(3))
                writable = true
            } else if text.hasSuffix(":ro") {
                path = String(text.dropLast(3))
            }
            guard path.hasPrefix("/"), !path.split(separator: "/").contains("..") else { return nil }
            self.init(path: path, writable: writable)
        }
    }

    /// The runc binary.
    public var runc: String
    /// The node's folders a rank sees (read-only unless stated).
    public var binds: [Bind]
    /// The most processes (and threads) one rank may have.
    public var pidsLimit: Int
    /// The memory limit of a rank that reserved none: what the agent offers.
    public var offeredMemoryMiB: Int
    /// OCI image layouts, one folder per image name (what `skopeo copy … oci:DIR/NAME:TAG` writes).
    public var imageDir: String?
    /// The NVIDIA Container Toolkit's CDI spec, applied to ranks with an image when the file exists.
    public var cdiSpec: String
    /// Where ranks' cgroups go, under each controller's root.
    public var cgroupParent: String
    /// Host files and folders hidden in every container, though under a bound folder (the agent's credentials).
    public var masked: [String]
    /// Where the driver lists MIG capabilities, and the character major of `/dev/nvidia-caps` (nil without the
    /// driver): a MIG device's rank gets its capability devices from these.
    public var migCapabilityRoot = "/proc/driver/nvidia/capabilities"
    public var capsMajor: Int64? = ContainerRuntime.characterMajor("nvidia-caps")

    /// The node's system folders, read-only: what a program needs to run from the host's own installation.
    public static let systemBinds = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"].map { Bind(path: $0) }

    public init(
        runc: String, binds: [Bind] = ContainerRuntime.systemBinds, pidsLimit: Int = 4096, offeredMemoryMiB: Int, imageDir: String? = nil,
        cdiSpec: String = "/etc/cdi/nvidia.yaml", cgroupParent: String = "/allot", masked: [String] = []
    ) {
        self.masked = masked
        self.runc = runc
        self.binds = binds
        self.pidsLimit = pidsLimit
        self.offeredMemoryMiB = offeredMemoryMiB
        self.imageDir = imageDir
        self.cdiSpec = cdiSpec
        self.cgroupParent = cgroupParent
    }

    /// runc on PATH, if there is one.
    public static func findRunc() -> String? { self.find("runc") }

    static func containerID(_ key: RankKey) -> String { "allot-\(key.jobID).\(key.attempt).\(key.rank)" }

    /// The rank's init (pid 1 of its container): it forwards the stop signals to the command, which a pid
    /// namespace's init would otherwise not receive, and exits with the command's status. Written by hand
    /// because it is a few lines of POSIX shell, and every root filesystem a rank runs in has a /bin/sh.
    /// A wait cut short by a forwarded signal returns 128+n whether or not the command died of it: the trap
    /// counts, and such a wait is waited again for the command's real status (127 from that second wait means
    /// it had been reaped already, so the status in hand stands).
    static let initScript = """
        n=0; status=
        for s in TERM INT HUP USR1 USR2 QUIT ALRM XCPU VTALRM PROF WINCH URG; do trap "n=\\$((n+1)); kill -$s \\"\\$child\\" 2>/dev/null" "$s"; done
        cd "$1" || exit 126
        /bin/sh -c "$2" &
        child=$!
        while :; do
          m=$n; wait "$child"; w=$?
          if [ "$w" = 127 ] && [ -n "$status" ]; then break; fi
          status=$w
          if [ "$n" = "$m" ]; then break; fi
        done
        exit "$status"
        """

    /// The NVIDIA device nodes a rank sees: every GPU of the node (opening another rank's is refused by the
    /// device cgroup with EPERM), and the driver's control devices.
    static func deviceNodes(gpus: [GPUInfo]) -> [OCISpec.Linux.Device] {
        var nodes = gpus.map { g in
            OCISpec.Linux.Device(
                path: "/dev/nvidia\(g.minorNumber ?? g.index)", type: "c", major: 195, minor: Int64(g.minorNumber ?? g.index), fileMode: 0o666,
                uid: 0, gid: 0)
        }
        nodes.append(OCISpec.Linux.Device(path: "/dev/nvidiactl", type: "c", major: 195, minor: 255, fileMode: 0o666, uid: 0, gid: 0))
        nodes.append(OCISpec.Linux.Device(path: "/dev/nvidia-modeset", type: "c", major: 195, minor: 254, fileMode: 0o666, uid: 0, gid: 0))
        if let uvm = self.characterMajor("nvidia-uvm") {
            nodes.append(OCISpec.Linux.Device(path: "/dev/nvidia-uvm", type: "c", major: uvm, minor: 0, fileMode: 0o666, uid: 0, gid: 0))
            nodes.append(OCISpec.Linux.Device(path: "/dev/nvidia-uvm-tools", type: "c", major: uvm, minor: 1, fileMode: 0o666, uid: 0, gid: 0))
        }
        return nodes
    }

    /// The major number the kernel gave a character driver (`/proc/devices`), if it is loaded.
    public static func characterMajor(_ driver: String) -> Int64? {
        guard let text = try? String(contentsOfFile: "/proc/devices", encoding: .utf8) else { return nil }
        var inCharacter = false
        for line in text.split(separator: "\n") {
            if line.hasPrefix("Character devices") { inCharacter = true } else if line.hasPrefix("Block devices") { inCharacter = false }
            let parts = line.split(separator: " ")
            if inCharacter, parts.count == 2, parts[1] == driver, let major = Int64(parts[0]) { return major }
        }
        return nil
    }

    /// The bundle's config.json for one rank.
    func spec(
        for request: LaunchRequest, account: Account, rootfs: String, rootIsImage: Bool, scratch: String, script: String?, command: String,
        gpus: [GPUInfo], cdi: CDIEdits, node: String, extraMounts: [OCISpec.Mount] = []
    ) -> OCISpec {
        var mounts: [OCISpec.Mount] = [
            .init(destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"]),
            .init(destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"]),
            .init(
                destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
            .init(destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777"]),
            .init(destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"]),
            // A fresh sysfs cannot be mounted without a network namespace of its own: the host's, read-only.
            .init(destination: "/sys", type: "bind", source: "/sys", options: ["rbind", "ro", "nosuid", "noexec", "nodev"]),
            .init(destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777"]),
            .init(destination: "/work", type: "bind", source: scratch, options: ["rbind", "rw", "nosuid", "nodev"]),
        ]
        if !rootIsImage {
            for b in self.binds where FileManager.default.fileExists(atPath: b.path) {
                mounts.append(
                    .init(destination: b.path, type: "bind", source: b.path, options: ["rbind", b.writable ? "rw" : "ro", "nosuid", "nodev"]))
            }
        }
        if let dir = request.workingDir {
            mounts.append(.init(destination: dir, type: "bind", source: dir, options: ["rbind", "rw", "nosuid", "nodev"]))
        }
        if let script {
            mounts.append(.init(destination: "/.allot-script", type: "bind", source: script, options: ["bind", "ro", "nosuid", "nodev"]))
        }
        mounts += extraMounts
        mounts += cdi.mounts

        let t = request.tenant
        let memoryMiB = t.memoryMiB > 0 ? t.memoryMiB : self.offeredMemoryMiB
        var devices = Self.deviceNodes(gpus: gpus)
        // The rank's GPUs by their device's minor number (never assumed to be the index: nvidia-smi's order is PCI's).
        let mine = Set(request.gpuIndices.compactMap { i in gpus.first { $0.index == i }?.minorNumber.map(Int64.init) })
        var rules: [OCISpec.Linux.DeviceRule] = [.init(allow: false, access: "rwm")]
        for d in devices where d.major != 195 || mine.contains(d.minor) || d.minor >= 254 {
            rules.append(.init(allow: true, type: "c", major: d.major, minor: d.minor, access: "rw"))
        }
        // A MIG device is its GPU's device node plus the capability devices of its GPU and compute instance.
        for d in MIGCapabilities.devices(for: request.gpuUUIDs ?? [], gpus: gpus, procRoot: self.migCapabilityRoot, major: self.capsMajor) {
            devices.append(d)
            rules.append(.init(allow: true, type: "c", major: d.major, minor: d.minor, access: "r"))
        }
        for d in cdi.devices where !devices.contains(d) {
            devices.append(d)
            rules.append(.init(allow: true, type: d.type, major: d.major, minor: d.minor, access: "rw"))
        }
        let env = Supervisor.environment(for: request, node: node, account: account).merging(cdi.env) { ours, _ in ours }
        return OCISpec(
            process: .init(
                user: .init(uid: account.uid, gid: account.gid, additionalGids: account.groups.isEmpty ? nil : account.groups),
                args: ["/bin/sh", "-c", Self.initScript, "allot-rank", request.workingDir ?? "/work", command],
                env: env.map { "\($0.key)=\($0.value)" }.sorted(), cwd: "/",
                rlimits: [.init(type: "RLIMIT_CORE", hard: 0, soft: 0)]),
            root: .init(path: rootfs, readonly: true), hostname: node, mounts: mounts,
            hooks: cdi.hooks.isEmpty ? nil : .init(createContainer: cdi.hooks, startContainer: nil),
            linux: .init(
                namespaces: ["pid", "ipc", "uts", "mount"].map { .init(type: $0) }, devices: devices,
                resources: .init(
                    devices: rules, memory: .init(limit: Int64(memoryMiB) << 20),
                    cpu: t.cpuMilli > 0 ? .init(quota: Int64(t.cpuMilli) * 100, period: 100_000) : nil, pids: .init(limit: Int64(self.pidsLimit))),
                cgroupsPath: "\(self.cgroupParent)/\(Self.containerID(request.key))",
                maskedPaths: [
                    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                    "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/fs/cgroup", "/sys/devices/virtual/powercap", "/etc/allot",
                ] + self.masked,
                readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"], seccomp: Seccomp.profile))
    }

    /// Why `dir` cannot be a rank's working directory, or nil: it must resolve (symbolic links followed) to a
    /// folder under one of the folders the operator shares read-write (`--bind PATH:rw`), so a job cannot bind
    /// the host's /proc, /run, /dev or the agent's own state into its container.
    func workingDirectoryProblem(_ dir: String, node: String) -> String? {
        guard let resolved = realpath(dir, nil) else { return "the working directory \(dir) does not exist on node \(node)" }
        let real = String(cString: resolved)
        free(resolved)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: real, isDirectory: &isDir), isDir.boolValue else {
            return "the working directory \(dir) is not a folder on node \(node)"
        }
        let roots = self.binds.filter(\.writable).map(\.path)
        guard roots.contains(where: { real == $0 || real.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }) else {
            return
                "the working directory \(dir) is not under a folder node \(node) shares with jobs (\(roots.isEmpty ? "none" : roots.joined(separator: ", ")))"
        }
        return nil
    }

    /// The host pids of every process in a rank's container (its cgroup's), nil when they cannot be read.
    func processes(_ key: RankKey) -> [Int32]? {
        let path = "\(self.cgroupParent)/\(Self.containerID(key))"
        let v2 = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers")
        let file = v2 ? "/sys/fs/cgroup\(path)/cgroup.procs" : "/sys/fs/cgroup/pids\(path)/cgroup.procs"
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        return text.split(separator: "\n").compactMap { Int32($0) }
    }

    /// What a rank's cgroup says of how it ended, read after it exits and before its container is deleted:
    /// whether the memory limit killed a process, whether it ran into its process limit.
    func limitsHit(_ key: RankKey, memoryMiB: Int) -> String? {
        let path = "\(self.cgroupParent)/\(Self.containerID(key))"
        let v2 = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers")
        let memory = v2 ? "/sys/fs/cgroup\(path)/memory.events" : "/sys/fs/cgroup/memory\(path)/memory.oom_control"
        let pids = v2 ? "/sys/fs/cgroup\(path)/pids.events" : "/sys/fs/cgroup/pids\(path)/pids.events"
        var hits: [String] = []
        if let n = Self.counter(memory, "oom_kill"), n > 0 { hits.append("out of memory (limit \(Self.size(mebibytes: memoryMiB)))") }
        if let n = Self.counter(pids, "max"), n > 0 { hits.append("stopped at its limit of \(self.pidsLimit) processes") }
        return hits.isEmpty ? nil : hits.joined(separator: "; ")
    }

    static func counter(_ file: String, _ name: String) -> Int? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == name { return Int(parts[1]) }
        }
        return nil
    }

    static func size(mebibytes m: Int) -> String { m >= 1024 && m % 1024 == 0 ? "\(m / 1024) GiB" : "\(m) MiB" }

    /// Removes a container and everything in it (its processes, cgroups, runc's state); false when runc could not,
    /// so the caller tries again. A container runc does not know counts as removed.
    @discardableResult
    func delete(_ key: RankKey) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: self.runc)
        p.arguments = ["delete", "--force", Self.containerID(key)]
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        guard (try? p.run()) != nil else { return false }
        let said = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return p.terminationStatus == 0 || said.contains("does not exist") || said.contains("not exist")
    }

    /// Whether `pid` is a process of this rank's container (its cgroup names the container): a pid is signalled
    /// only then, never a process that merely reused the number.
    static func belongs(_ pid: Int32, to key: RankKey) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return false }
        return text.contains("/\(self.containerID(key))")
    }
}

/// The capability devices that open one MIG device to a process (NVIDIA's MIG user guide, "Device Nodes and
/// Capabilities"): `/proc/driver/nvidia/capabilities/gpuN/mig/giG/access` and `…/giG/ciC/access` each name a
/// `DeviceFileMinor` of `/dev/nvidia-caps/nvidia-capM`. Without them CUDA in the container cannot open the device.
enum MIGCapabilities {
    static func devices(for uuids: [String], gpus: [GPUInfo], procRoot: String, major: Int64?) -> [OCISpec.Linux.Device] {
        guard let major else { return [] }
        var out: [OCISpec.Linux.Device] = []
        for uuid in uuids where uuid.hasPrefix("MIG-") {
            guard let gpu = gpus.first(where: { ($0.migDevices ?? []).contains { $0.uuid == uuid } }),
                let d = gpu.migDevices?.first(where: { $0.uuid == uuid })
            else { continue }
            let base = "\(procRoot)/gpu\(gpu.minorNumber ?? gpu.index)/mig/gi\(d.gpuInstance)"
            for file in ["\(base)/access", "\(base)/ci\(d.computeInstance)/access"] {
                guard let minor = self.minor(file) else { continue }
                let device = OCISpec.Linux.Device(
                    path: "/dev/nvidia-caps/nvidia-cap\(minor)", type: "c", major: major, minor: minor, fileMode: 0o444, uid: 0, gid: 0)
                if !out.contains(device) { out.append(device) }
            }
        }
        return out
    }

    /// `DeviceFileMinor: 12` → 12.
    static func minor(_ file: String) -> Int64? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        for line in text.split(whereSeparator: \.isNewline) where line.hasPrefix("DeviceFileMinor:") {
            return Int64(line.dropFirst("DeviceFileMinor:".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}
