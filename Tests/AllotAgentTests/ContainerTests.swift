import AllotAgent
import AllotCore
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Ranks confined by the real runtime (runc), under real accounts, with real limits: what a job can and cannot
/// reach on a shared node. Needs root and runc (CI has both); a developer's quick run without them skips.
@Suite("Containers: every rank in an OCI container under its organisation's account", .enabled(if: Confined.available, "needs root and runc"))
struct ContainerTests {
    static func supervisor(pidsLimit: Int = 256) throws -> (Supervisor, URL) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-ct-\(UUID().uuidString.prefix(8))")
        let runtime = ContainerRuntime(runc: ContainerRuntime.findRunc()!, pidsLimit: pidsLimit, offeredMemoryMiB: 2048, imageDir: Confined.imageDir)
        return (try Supervisor(stateDir: dir, node: "n1", isolation: .container(runtime)), dir)
    }

    static func launch(
        _ key: RankKey, _ command: String, account: String = Confined.accountA, org: String = "lab", gpus: [Int] = [], memoryMiB: Int = 256,
        image: String? = nil, grace: Int = 5
    ) -> LaunchRequest {
        LaunchRequest(
            key: key, command: command, env: ["JOB_VAR": "x y"], workingDir: nil, gpuIndices: gpus,
            gang: GangInfo(masterAddr: "10.0.0.1", masterPort: 29511, nnodes: 1, nodeRank: 0, nprocPerNode: 1), gracePeriodSeconds: grace,
            tenant: RankTenant(org: org, owner: "alice", account: account, cpuMilli: 1000, memoryMiB: memoryMiB, image: image))
    }

    static func log(_ s: Supervisor, _ key: RankKey) async throws -> String {
        try String(contentsOfFile: await s.logPath(for: key), encoding: .utf8)
    }

    @Test("a rank runs as its organisation's account, sees its variables and no agent's, and keeps its exit code")
    func accountAndEnvironment() async throws {
        let (s, _) = try Self.supervisor()
        let key = RankKey(jobID: 1, attempt: 1, rank: 0)
        _ = try await s.launch(Self.launch(key, "id -u; id -g; env | sort; exit 3"), agentEnvironment: ["AGENT_SECRET": "hunter2"])
        let end = try await SupervisorTests.waitForEnd(s, key)
        #expect(end.state == .exited && end.exitCode == 3)
        let log = try await Self.log(s, key)
        let a = try #require(Confined.ids(Confined.accountA))
        #expect(log.hasPrefix("\(a.uid)\n\(a.gid)\n"), "\(log)")
        for line in ["ALLOT_USER=alice", "ALLOT_ORG=lab", "JOB_VAR=x y", "HOME=/work", "USER=\(Confined.accountA)"] {
            #expect(log.contains(line + "\n"), "missing \(line)")
        }
        #expect(!log.contains("hunter2"), "an agent's variable reached the rank")
        // Its output belongs to its account, readable by its group only, in its organisation's folder.
        let attributes = try FileManager.default.attributesOfItem(atPath: await s.logPath(for: key))
        #expect((attributes[.posixPermissions] as? Int) == 0o640)
        #expect((attributes[.ownerAccountID] as? UInt) == UInt(a.uid))
    }

    @Test("two organisations on one node: B cannot read A's output, see or signal A's processes, or reach the agent's state")
    func twoOrganisations() async throws {
        let (s, dir) = try Self.supervisor()
        let a = RankKey(jobID: 2, attempt: 1, rank: 0)
        let b = RankKey(jobID: 3, attempt: 1, rank: 0)
        _ = try await s.launch(Self.launch(a, "echo secret-of-A; sleep 300", account: Confined.accountA, org: "defense"))
        try await SupervisorTests.waitForLog(s, a, "secret-of-A")
        let aLog = await s.logPath(for: a)
        let aPid = try #require(await s.all().first { $0.key == a }?.pid)
        let probe = """
            cat \(aLog) 2>&1 | head -1; echo "A visible: $(ps -e -o args= | grep -c '[s]leep 300')"; kill -9 \(aPid) 2>&1 | head -1
            cat \(dir.path)/ranks/\(a.jobID).\(a.attempt).\(a.rank)/meta.json 2>&1 | head -1
            setsid sleep 987654 & echo started
            """
        _ = try await s.launch(Self.launch(b, probe, account: Confined.accountB, org: "startups"))
        let end = try await SupervisorTests.waitForEnd(s, b)
        #expect(end.exitCode == 0)
        let log = try await Self.log(s, b)
        #expect(!log.contains("secret-of-A"))
        #expect(log.contains("No such file or directory"), "\(log)")  // A's output and the agent's state are not in B's world
        #expect(log.contains("A visible: 0"), "\(log)")
        #expect(log.contains("No such process"), "\(log)")  // A's processes do not exist in B's pid namespace
        // On the host, B's account cannot open A's output either.
        let (status, said) = try Confined.run("/usr/sbin/runuser", ["-u", Confined.accountB, "--", "cat", aLog])
        #expect(status != 0 && said.contains("Permission denied"), "\(said)")
        // B's background process went with its container.
        try await Task.sleep(for: .milliseconds(300))
        #expect(try Confined.run("/usr/bin/pgrep", ["-f", "sleep 987654"]).0 != 0, "a background process outlived its rank")
        #expect(await s.all().first { $0.key == a }?.state == .running)  // A carries on
        _ = try await s.stop(a, gracePeriodSeconds: 0)
        _ = try await SupervisorTests.waitForEnd(s, a)
    }

    @Test("devices: the rank's own GPU opens with the driver's error (ENXIO here), the node's others are refused (EPERM)")
    func devices() async throws {
        let (s, _) = try Self.supervisor()
        await s.setGPUs((0..<8).map { GPUInfo(index: $0, uuid: "GPU-\($0)", model: "H200", memoryMiB: 1, minorNumber: $0) })
        let key = RankKey(jobID: 4, attempt: 1, rank: 0)
        let probe = (0..<8).map { "head -c1 /dev/nvidia\($0) >/dev/null 2>/tmp/e; echo \"nvidia\($0): $(cat /tmp/e)\"" }.joined(separator: "\n")
        _ = try await s.launch(Self.launch(key, probe, gpus: [2]))
        _ = try await SupervisorTests.waitForEnd(s, key)
        let log = try await Self.log(s, key)
        for i in 0..<8 {
            let line = log.split(separator: "\n").first { $0.hasPrefix("nvidia\(i):") }.map(String.init) ?? ""
            #expect(line.contains(i == 2 ? "No such device or address" : "Operation not permitted"), "\(line)")
        }
        #expect(log.contains("nvidia2: "))
    }

    @Test(
        "a MIG device: the rank opens its GPU's device node and its instance's two capability devices (read-only), no other GPU or capability; CUDA sees it by its MIG UUID"
    )
    func migDevice() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-mig-\(UUID().uuidString.prefix(8))")
        // The driver's capability files for GPU 2 (minor 2): GI 9 / CI 0 is the rank's device, GI 10 / CI 0 another's.
        for (path, minor) in [
            ("gpu2/mig/gi9/access", 84), ("gpu2/mig/gi9/ci0/access", 85), ("gpu2/mig/gi10/access", 93), ("gpu2/mig/gi10/ci0/access", 94),
        ] {
            let file = dir.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try "DeviceFileMinor: \(minor)\nMode: 292\n".write(to: file, atomically: true, encoding: .utf8)
        }
        var runtime = ContainerRuntime(runc: ContainerRuntime.findRunc()!, pidsLimit: 64, offeredMemoryMiB: 2048, imageDir: Confined.imageDir)
        runtime.migCapabilityRoot = dir.path
        runtime.capsMajor = 238
        let s = try Supervisor(stateDir: dir.appendingPathComponent("state"), node: "n1", isolation: .container(runtime))
        var gpus = (0..<4).map { GPUInfo(index: $0, uuid: "GPU-\($0)", model: "H100", memoryMiB: 81_559, migMode: "Disabled", minorNumber: $0) }
        gpus[2].migMode = "Enabled"
        gpus[2].migDevices = [
            MIGDevice(index: 0, uuid: "MIG-aaaa", profile: "1g.10gb", gpuInstance: 9, computeInstance: 0, memoryMiB: 9_856),
            MIGDevice(index: 1, uuid: "MIG-bbbb", profile: "1g.10gb", gpuInstance: 10, computeInstance: 0, memoryMiB: 9_856),
        ]
        await s.setGPUs(gpus)
        let key = RankKey(jobID: 40, attempt: 1, rank: 0)
        let probe = """
            echo "visible=$CUDA_VISIBLE_DEVICES"; ls /dev/nvidia-caps
            for d in /dev/nvidia2 /dev/nvidia3 /dev/nvidia-caps/nvidia-cap84 /dev/nvidia-caps/nvidia-cap85; do
              head -c1 $d >/dev/null 2>/tmp/e; echo "$d: $(cat /tmp/e)"; done
            """
        var request = Self.launch(key, probe, gpus: [102])
        request.gpuUUIDs = ["MIG-aaaa"]
        _ = try await s.launch(request)
        #expect(try await SupervisorTests.waitForEnd(s, key).exitCode == 0)
        let log = try await Self.log(s, key)
        #expect(log.contains("visible=MIG-aaaa\n"), "\(log)")
        #expect(log.contains("nvidia-cap84\nnvidia-cap85\n") && !log.contains("nvidia-cap93") && !log.contains("nvidia-cap94"), "\(log)")
        for (device, error) in [
            ("/dev/nvidia2", "No such device or address"), ("/dev/nvidia3", "Operation not permitted"),
            ("/dev/nvidia-caps/nvidia-cap84", "No such device or address"), ("/dev/nvidia-caps/nvidia-cap85", "No such device or address"),
        ] {
            let line = log.split(separator: "\n").first { $0.hasPrefix("\(device):") }.map(String.init) ?? ""
            #expect(line.contains(error), "\(line)")
        }
    }

    @Test("a rank past its memory limit ends out of memory, saying so; the agent and the node's other ranks carry on")
    func memoryLimit() async throws {
        let (s, _) = try Self.supervisor()
        let other = RankKey(jobID: 5, attempt: 1, rank: 0)
        _ = try await s.launch(Self.launch(other, "sleep 300"))
        let key = RankKey(jobID: 6, attempt: 1, rank: 0)
        // tail keeps a line that never ends in memory: it grows until the limit stops it.
        _ = try await s.launch(Self.launch(key, "head -c 419430400 /dev/zero | tail", memoryMiB: 64))
        let end = try await SupervisorTests.waitForEnd(s, key, seconds: 60)
        #expect(end.state == .exited && end.exitCode != 0)
        #expect(end.detail?.contains("out of memory (limit 64 MiB)") == true, "\(String(describing: end.detail))")
        #expect(await s.all().first { $0.key == other }?.state == .running)
        _ = try await s.stop(other, gracePeriodSeconds: 0)
        _ = try await SupervisorTests.waitForEnd(s, other)
    }

    @Test("a fork bomb stops at the process limit, and the rank says so")
    func pidsLimit() async throws {
        let (s, _) = try Self.supervisor(pidsLimit: 64)
        let key = RankKey(jobID: 7, attempt: 1, rank: 0)
        _ = try await s.launch(Self.launch(key, "i=0; while [ $i -lt 500 ]; do sleep 30 & i=$((i+1)); done; exit 0"))
        let end = try await SupervisorTests.waitForEnd(s, key, seconds: 60)
        #expect(end.exitCode != 0)
        #expect(end.detail?.contains("stopped at its limit of 64 processes") == true, "\(String(describing: end.detail))")
    }

    @Test("stop: SIGTERM reaches the command inside (which may checkpoint); one that ignores it is killed after the grace period")
    func stopProtocol() async throws {
        let (s, _) = try Self.supervisor()
        let graceful = RankKey(jobID: 8, attempt: 1, rank: 0)
        _ = try await s.launch(Self.launch(graceful, "trap 'echo saved; exit 0' TERM; echo ready; sleep 60 & wait"))
        let stubborn = RankKey(jobID: 9, attempt: 1, rank: 0)
        _ = try await s.launch(Self.launch(stubborn, "trap '' TERM; echo ready; sleep 60"))
        try await SupervisorTests.waitForLog(s, graceful, "ready")
        try await SupervisorTests.waitForLog(s, stubborn, "ready")
        _ = try await s.stop(graceful, gracePeriodSeconds: 10)
        _ = try await s.stop(stubborn, gracePeriodSeconds: 1)
        let g = try await SupervisorTests.waitForEnd(s, graceful)
        #expect(g.exitCode == 0)
        #expect(try await Self.log(s, graceful).contains("saved"))
        let k = try await SupervisorTests.waitForEnd(s, stubborn)
        #expect(k.signal == 9 && k.exitCode == 137)
    }

    @Test("an account the node does not have is refused at launch, with a reason naming it")
    func unknownAccount() async throws {
        let (s, _) = try Self.supervisor()
        await #expect(
            throws: SupervisorError.refused(
                "the account 'allot-t-nobody-here' does not exist on this node (create it, or name another in Policies/ organizations[].account)")
        ) {
            try await s.launch(Self.launch(RankKey(jobID: 10, attempt: 1, rank: 0), "true", account: "allot-t-nobody-here"))
        }
        await #expect(throws: SupervisorError.self) {
            try await s.launch(Self.launch(RankKey(jobID: 11, attempt: 1, rank: 0), "true", account: "root"))
        }
    }

    @Test("a job's image is its root filesystem: busybox, under the organisation's account, with its GPUs", .enabled(if: Confined.image))
    func image() async throws {
        let (s, _) = try Self.supervisor()
        await s.setGPUs((0..<2).map { GPUInfo(index: $0, uuid: "GPU-\($0)", model: "H200", memoryMiB: 1, minorNumber: $0) })
        let key = RankKey(jobID: 12, attempt: 1, rank: 0)
        _ = try await s.launch(
            Self.launch(
                key, "id -u; test -x /usr/bin/python3 && echo host-python || echo no-python; ls /dev/nvidia1; echo $CUDA_VISIBLE_DEVICES",
                gpus: [1], image: "testimg:v1"))
        let end = try await SupervisorTests.waitForEnd(s, key)
        #expect(end.exitCode == 0)
        let log = try await Self.log(s, key)
        let a = try #require(Confined.ids(Confined.accountA))
        #expect(log.hasPrefix("\(a.uid)\n"), "\(log)")
        #expect(log.contains("no-python"))  // the image, not the host's /usr
        #expect(log.contains("/dev/nvidia1\n0\n"))  // the one GPU it can open is its device 0
    }
}

/// What the container tests need on this machine: root, runc, two test accounts (prefixed `allot-t-`, removed
/// by ops/test.sh), and a busybox image laid out with umoci.
enum Confined {
    static let accountA = "allot-t-a"
    static let accountB = "allot-t-b"

    static let available: Bool = {
        guard getuid() == 0, ContainerRuntime.findRunc() != nil else {
            // CI always has both: there, skipping would be a silent pass.
            return ProcessInfo.processInfo.environment["CI"] != nil
        }
        for a in [accountA, accountB] where ids(a) == nil {
            _ = try? run("/usr/sbin/useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", a])
        }
        return true
    }()

    static func ids(_ account: String) -> (uid: UInt32, gid: UInt32)? {
        guard let pw = getpwnam(account) else { return nil }
        return (pw.pointee.pw_uid, pw.pointee.pw_gid)
    }

    /// An OCI layout `testimg` (tag v1) of busybox-static, built once per run.
    static let imageDir: String = FileManager.default.temporaryDirectory.appendingPathComponent("allot-images-\(getpid())").path

    static let image: Bool = {
        guard available, FileManager.default.isExecutableFile(atPath: "/usr/bin/umoci"), FileManager.default.isExecutableFile(atPath: "/bin/busybox")
        else { return ProcessInfo.processInfo.environment["CI"] != nil }
        let layout = imageDir + "/testimg"
        let bundle = imageDir + "/build"
        do {
            try FileManager.default.createDirectory(atPath: imageDir, withIntermediateDirectories: true)
            _ = try run("/usr/bin/umoci", ["init", "--layout", layout])
            _ = try run("/usr/bin/umoci", ["new", "--image", "\(layout):v1"])
            _ = try run("/usr/bin/umoci", ["unpack", "--image", "\(layout):v1", bundle])
            let bin = bundle + "/rootfs/bin"
            try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: bin + "/busybox")
            for applet in ["sh", "id", "ls", "echo", "test", "cat", "sleep"] {
                try FileManager.default.createSymbolicLink(atPath: bin + "/\(applet)", withDestinationPath: "busybox")
            }
            _ = try run("/usr/bin/umoci", ["repack", "--image", "\(layout):v1", bundle])
            return true
        } catch {
            return false
        }
    }()

    @discardableResult
    static func run(_ path: String, _ arguments: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
