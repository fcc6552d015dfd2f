import AllotAgent
import AllotCore
import Foundation
import Testing

@Suite("GPU discovery from nvidia-smi -q -x")
struct GPUDiscoveryTests {
    static func fixture(_ name: String) throws -> Data {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: "xml", subdirectory: "Fixtures"))
        return try Data(contentsOf: url)
    }

    @Test("H100 SXM: index by document order, model, memory, fabric clique as NVLink domain; historical errors that were remapped are not a fault")
    func h100() throws {
        let gpus = try GPUDiscovery.parse(xml: Self.fixture("h100-sxm"))
        #expect(gpus.map(\.index) == [0, 1])  // not minor_number (2, 0): nvidia-smi's index is PCI order
        #expect(gpus.map(\.model) == ["H100", "H100"])
        #expect(gpus[0].uuid == "GPU-3f2a0c1e-8b7d-4c55-9a1e-0d3b6f7e2a11")
        #expect(gpus[0].memoryMiB == 81559)
        #expect(gpus[0].nvlinkDomain == 0 && gpus[1].nvlinkDomain == 0)
        #expect(gpus[0].migMode == "Disabled")
        #expect(gpus.allSatisfy { $0.health == .healthy })
    }

    @Test("A100 with MIG enabled: N/A fields are absent, not zero and not errors")
    func a100MIG() throws {
        let gpus = try GPUDiscovery.parse(xml: Self.fixture("a100-mig"))
        #expect(gpus.count == 1)
        #expect(gpus[0].model == "A100")
        #expect(gpus[0].migMode == "Enabled")
        #expect(gpus[0].memoryMiB == 81920)
        #expect(gpus[0].nvlinkDomain == nil)
        #expect(gpus[0].health == .healthy)
    }

    @Test("V100, older schema: double-bit ECC errors and pages pending retirement quarantine the GPU")
    func v100() throws {
        let gpus = try GPUDiscovery.parse(xml: Self.fixture("v100-legacy"))
        #expect(gpus.map(\.model) == ["V100", "V100"])
        #expect(gpus[0].health == .healthy)
        #expect(gpus[0].migMode == nil)
        #expect(gpus[1].health == .quarantined)
        #expect(gpus[1].healthDetail?.contains("2 uncorrectable ECC errors") == true)
        #expect(gpus[1].healthDetail?.contains("pending retirement") == true)
    }

    @Test("H200 faults: uncorrectable DRAM errors with a pending row remap, and a GPU that fell off the bus")
    func h200Faults() throws {
        let gpus = try GPUDiscovery.parse(xml: Self.fixture("h200-faults"))
        #expect(gpus.count == 3)
        #expect(gpus[0].health == .healthy && gpus[0].model == "H200" && gpus[0].memoryMiB == 143_771)
        #expect(gpus[1].health == .quarantined)
        #expect(gpus[1].healthDetail?.contains("row remapping pending") == true)
        #expect(gpus[2].health == .quarantined)
        #expect(gpus[2].healthDetail?.contains("fell off the bus") == true)
        #expect(gpus[2].memoryMiB == 0)
    }

    @Test(
        "product names to models",
        arguments: [
            ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA A100-SXM4-80GB", "A100"), ("Tesla V100-SXM2-32GB", "V100"), ("NVIDIA H200", "H200"),
            ("NVIDIA GeForce RTX 4090", "4090"), ("NVIDIA L40S", "L40S"), ("NVIDIA GH200 480GB", "GH200"), ("NVIDIA B200", "B200"),
        ])
    func models(name: String, model: String) { #expect(GPUDiscovery.model(from: name) == model) }

    @Test("not XML, or not nvidia-smi's, is a clear error")
    func garbage() {
        #expect(throws: (any Error).self) { try GPUDiscovery.parse(xml: Data("not xml".utf8)) }
        #expect(throws: (any Error).self) { try GPUDiscovery.parse(xml: Data("<other/>".utf8)) }
    }

    /// A folder with an executable `nvidia-smi` shell script of this body.
    static func fakeNvidiaSMI(_ body: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fake-smi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let script = dir.appendingPathComponent("nvidia-smi")
        try "#!/bin/sh\n\(body)\n".write(to: script, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script.path)
        return dir
    }

    /// Discovery through the nvidia-smi at `path`. A process another test forks at that moment may hold the script
    /// open for writing a little longer, which makes exec fail with ETXTBSY ("Text file busy"): tried again, that
    /// passes.
    static func discover(path: String) throws -> [GPUInfo]? {
        for _ in 0..<40 {
            do {
                return try GPUDiscovery.nvidiaSMI(path: path)
            } catch  where "\(error)".contains("Text file busy") {
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        return nil
    }

    @Test("runs the nvidia-smi that ALLOT_NVIDIA_SMI names")
    func runsBinary() throws {
        let fixture = try #require(Bundle.module.url(forResource: "h100-sxm", withExtension: "xml", subdirectory: "Fixtures"))
        let dir = try Self.fakeNvidiaSMI("[ \"$1 $2\" = \"-q -x\" ] || exit 9\ncat '\(fixture.path)'")
        let path = GPUDiscovery.nvidiaSMIPath(environment: ["ALLOT_NVIDIA_SMI": dir.appendingPathComponent("nvidia-smi").path])
        #expect(try Self.discover(path: path)?.count == 2)
        #expect(throws: (any Error).self) { try GPUDiscovery.nvidiaSMI(path: dir.appendingPathComponent("missing").path) }
    }

    @Test("simulated GPUs")
    func simulated() throws {
        let gpus = try GPUDiscovery.simulated("4xH100,2xA100", node: "n1")
        #expect(gpus.map(\.model) == ["H100", "H100", "H100", "H100", "A100", "A100"])
        #expect(gpus.map(\.nvlinkDomain) == [0, 0, 0, 0, 1, 1])
        #expect(Set(gpus.map(\.uuid)).count == 6)
        #expect(throws: (any Error).self) { try GPUDiscovery.simulated("eightxH200", node: "n") }
        #expect(throws: (any Error).self) { try GPUDiscovery.simulated("0xH200", node: "n") }
    }
}

@Suite("XIDs from the kernel log")
struct KernelLogTests {
    @Test("XID lines are matched to GPUs by PCI bus id, whatever case and domain width")
    func parse() throws {
        let log = """
            [    2.000000] nvidia: loading out-of-tree module taints kernel.
            [ 8134.567890] NVRM: Xid (PCI:0000:3b:00): 79, pid=2417, name=python3, GPU has fallen off the bus.
            [ 9000.000001] NVRM: Xid (PCI:0000:18:00): 13, Graphics SM Warp Exception on (GPC 0, TPC 1, SM 0): Out Of Range Address
            [ 9100.000002] NVRM: Xid (PCI:0000:99:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error
            """
        let events = KernelLog.parse(log)
        #expect(events.map(\.event.xid) == [79, 13, 48])
        #expect(events[0].event.at == "8134.567890")
        let gpus = KernelLog.attach(
            events,
            to: [
                GPUInfo(index: 0, uuid: "a", model: "H100", memoryMiB: 1, pciBusID: "00000000:18:00.0"),
                GPUInfo(index: 1, uuid: "b", model: "H100", memoryMiB: 1, pciBusID: "00000000:3B:00.0"),
            ])
        #expect(gpus[0].xids.map(\.xid) == [13])
        #expect(gpus[1].xids.map(\.xid) == [79])
        #expect(XidEvent.grade(13) == .application && XidEvent.grade(79) == .hardware && XidEvent.grade(48) == .hardware)
    }

    @Test("the PCI bus id of each GPU comes from nvidia-smi")
    func busIDs() throws {
        let gpus = try GPUDiscovery.parse(xml: GPUDiscoveryTests.fixture("h100-sxm"))
        #expect(gpus.map(\.pciBusID) == ["00000000:18:00.0", "00000000:2A:00.0"])
    }
}

@Suite("NVLink domains from nvidia-smi topo -m")
struct GPUTopologyTests {
    static func matrix(_ name: String) throws -> String {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: "txt", subdirectory: "Fixtures"))
        return try String(contentsOf: url, encoding: .utf8)
    }

    @Test(
        "one domain per set of GPUs NVLink joins; a GPU reached only over PCIe is its own",
        arguments: [
            // DGX H100: eight SXM GPUs on NVSwitch, NV18 between every pair, four NICs, escapes around the header.
            ("topo-dgx-h100", [0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0]),
            // Four PCIe boards, two per socket: NODE within a socket, SYS across; no NVLink.
            ("topo-pcie-4gpu", [0: 0, 1: 1, 2: 2, 3: 3]),
            // Four PCIe boards joined in pairs by NVLink bridges (NV4): two domains.
            ("topo-bridged-4gpu", [0: 0, 1: 0, 2: 2, 3: 2]),
            // Two boards and one bridge.
            ("topo-bridged-2gpu", [0: 0, 1: 0]),
        ])
    func domains(fixture: String, expected: [Int: Int]) throws {
        let text = try Self.matrix(fixture)
        #expect(GPUTopology.nvlinkDomains(matrix: text) == expected)
        // The same with CRLF line ends, and with spaces for tabs.
        #expect(GPUTopology.nvlinkDomains(matrix: text.replacingOccurrences(of: "\n", with: "\r\n")) == expected)
        #expect(GPUTopology.nvlinkDomains(matrix: text.replacingOccurrences(of: "\t", with: "   ")) == expected)
    }

    @Test("NVLink joins through other GPUs too; no matrix is no answer")
    func chainsAndGarbage() {
        // 0–1 and 1–2 bridged, 3 alone: 0, 1 and 2 are one domain.
        let chain = """
                    GPU0    GPU1    GPU2    GPU3    CPU Affinity
            GPU0     X      NV2     SYS     SYS     0-7
            GPU1    NV2      X      NV2     SYS     0-7
            GPU2    SYS     NV2      X      SYS     0-7
            GPU3    SYS     SYS     SYS      X      0-7
            """
        #expect(GPUTopology.nvlinkDomains(matrix: chain) == [0: 0, 1: 0, 2: 0, 3: 3])
        // One GPU: its own domain.
        #expect(GPUTopology.nvlinkDomains(matrix: "\tGPU0\tCPU Affinity\tNUMA Affinity\nGPU0\t X \t0-15\t0\n") == [0: 0])
        #expect(GPUTopology.nvlinkDomains(matrix: "") == nil)
        #expect(GPUTopology.nvlinkDomains(matrix: "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") == nil)
        #expect(GPUTopology.nvlinkDomains(matrix: "\tGPU0\tGPU1\n") == nil)  // a header without rows
    }

    @Test("a 2-GPU rank on a bridged box stays on one bridge: never split where one domain can hold it")
    func placementKeepsToADomain() throws {
        let discovered = GPUDiscovery.withTopology(
            (0..<4).map { GPUInfo(index: $0, uuid: "GPU-\($0)", model: "A6000", memoryMiB: 49_140, nvlinkDomain: nil) },
            matrix: try Self.matrix("topo-bridged-4gpu"))
        #expect(discovered.map(\.nvlinkDomain) == [0, 0, 2, 2])
        var node = NodeSnapshot(
            name: "n1", pool: "p", cpuMilli: 64_000, memoryMiB: 256_000,
            gpus: discovered.map { GPUSlot(index: $0.index, model: $0.model, nvlinkDomain: $0.nvlinkDomain) })
        // GPU 0 busy: GPUs 1 and 2 are free and adjacent, but on two bridges; 2 and 3 share one.
        node.gpus[0].usedMilli = 1000
        let job = PendingJob(id: 1, org: "o", pool: "p", nodes: 1, perNode: NodeRequest(gpus: 2), priority: 0, submittedAt: 0)
        guard case .fits(let positions) = Placer.fit(job, on: node) else {
            Issue.record("a 2-GPU rank should fit")
            return
        }
        #expect(positions.sorted() == [2, 3])
    }

    @Test("discovery asks nvidia-smi topo -m, and keeps the fabric clique where it does not answer")
    func discoveryRunsTopo() throws {
        let xml = try #require(Bundle.module.url(forResource: "h100-sxm", withExtension: "xml", subdirectory: "Fixtures"))
        // The XML gives both GPUs fabric clique 0; this matrix says they are joined only over PCIe.
        let matrix = FileManager.default.temporaryDirectory.appendingPathComponent("topo-\(UUID().uuidString).txt")
        try "\tGPU0\tGPU1\tCPU Affinity\nGPU0\t X \tSYS\t0-7\nGPU1\tSYS\t X \t0-7\n".write(to: matrix, atomically: true, encoding: .utf8)
        let dir = try GPUDiscoveryTests.fakeNvidiaSMI(
            """
            case "$1 $2" in
              "-q -x") cat '\(xml.path)' ;;
              "topo -m") cat '\(matrix.path)' ;;
              *) exit 9 ;;
            esac
            """)
        let found = try GPUDiscoveryTests.discover(path: dir.appendingPathComponent("nvidia-smi").path)
        #expect(found?.map(\.nvlinkDomain) == [0, 1])
    }
}
