import AllotAgent
import AllotCore
import Foundation
import Testing

@Suite("MIG devices from nvidia-smi -q -x and -L")
struct MIGDiscoveryTests {
    /// The two GPUs of `a100-40gb-mig.xml`: GPU 0 cut into 3g.20gb + 2g.10gb + 1g.5gb × 2, GPU 1 with MIG off.
    static let a100GPUs = ["GPU-8a3f41c2-6d1e-b5a7-3c90-e21f4d7b0a58", "GPU-c41e9b07-2f5a-8d3c-71e6-0b9a5f2d8c13"]
    /// GPU 0's MIG devices 0…3 as `a100-40gb-mig-L.txt` names them.
    static let a100MIGs = [
        "MIG-4b2e7c91-05d3-5a8f-9e6b-1c7d3a0f5e24", "MIG-9f1a6d38-7c2e-5b04-a3d9-6e8f2b1c7a05",
        "MIG-2c8e5f17-b3a9-5d61-8f04-7a2c9e3b6d18", "MIG-e7d34a09-6b1f-5c82-94ae-3f5b0c8d2a71",
    ]

    /// `Fixtures/NAME.txt`, as it is (CRLF kept).
    static func listing(_ name: String) throws -> String {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: "txt", subdirectory: "Fixtures"))
        return try String(contentsOf: url, encoding: .utf8)
    }

    static func path(_ name: String, _ ext: String) throws -> String {
        try #require(Bundle.module.url(forResource: name, withExtension: ext, subdirectory: "Fixtures")).path
    }

    @Test("A100 40GB: each MIG device's index, GPU and compute instance and memory come from -q -x, in its order")
    func devicesFromXML() throws {
        let gpus = try GPUDiscovery.parse(xml: GPUDiscoveryTests.fixture("a100-40gb-mig"))
        try #require(gpus.count == 2)
        let devices = try #require(gpus[0].migDevices)
        #expect(devices.map(\.index) == [0, 1, 2, 3])
        #expect(devices.map(\.gpuInstance) == [1, 5, 13, 14])
        #expect(devices.map(\.computeInstance) == [0, 0, 0, 0])
        #expect(devices.map(\.memoryMiB) == [19_968, 9_856, 4_864, 4_864])
        // The GPU's own memory, not one of its devices'.
        #expect(gpus.map(\.memoryMiB) == [40_960, 40_960])
        #expect(gpus.map(\.uuid) == Self.a100GPUs)
        #expect(gpus.map(\.migMode) == ["Enabled", "Disabled"])
        #expect(gpus.map(\.pciBusID) == ["00000000:07:00.0", "00000000:0F:00.0"])
        #expect(gpus.map(\.minorNumber) == [0, 1])
        #expect(gpus.allSatisfy { $0.health == .healthy && $0.migPending == nil })
    }

    @Test("the product name is kept whole beside the short model")
    func productName() throws {
        let a100 = try GPUDiscovery.parse(xml: GPUDiscoveryTests.fixture("a100-40gb-mig"))
        #expect(a100.map(\.productName) == ["NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB"])
        #expect(a100.map(\.model) == ["A100", "A100"])
        let hopper = try GPUDiscovery.parse(xml: GPUDiscoveryTests.fixture("h200-mig"))
        #expect(hopper.map(\.productName) == ["NVIDIA H200", "NVIDIA H100 80GB HBM3"])
        #expect(hopper.map(\.model) == ["H200", "H100"])
    }

    @Test("before -L is merged a MIG device has no UUID and no profile: -q -x names neither")
    func nothingBeforeListing() throws {
        let gpus = try GPUDiscovery.parse(xml: GPUDiscoveryTests.fixture("a100-40gb-mig"))
        let devices = try #require(gpus.first?.migDevices)
        #expect(devices.count == 4)
        #expect(devices.allSatisfy { $0.uuid == "" && $0.profile == nil })
    }

    @Test("a GPU with MIG disabled has no MIG devices (nil, not an empty list), before and after -L")
    func migDisabled() throws {
        let parsed = try GPUDiscovery.parse(xml: GPUDiscoveryTests.fixture("a100-40gb-mig"))
        try #require(parsed.count == 2)
        #expect(parsed[1].migMode == "Disabled")
        #expect(parsed[1].migDevices == nil)
        let merged = GPUDiscovery.withMIGListing(parsed, listing: try Self.listing("a100-40gb-mig-L"))
        #expect(merged[1].migDevices == nil)
    }

    @Test("MIG enabled with no device made yet: an empty list of devices")
    func enabledWithoutDevices() throws {
        let xml = """
            <?xml version="1.0" ?>
            <nvidia_smi_log>
                <gpu id="00000000:07:00.0">
                    <product_name>NVIDIA A100-SXM4-40GB</product_name>
                    <mig_mode>
                        <current_mig>Enabled</current_mig>
                        <pending_mig>Enabled</pending_mig>
                    </mig_mode>
                    <mig_devices>
                        None
                    </mig_devices>
                    <uuid>GPU-8a3f41c2-6d1e-b5a7-3c90-e21f4d7b0a58</uuid>
                    <fb_memory_usage><total>40960 MiB</total></fb_memory_usage>
                </gpu>
            </nvidia_smi_log>
            """
        let gpus = try GPUDiscovery.parse(xml: Data(xml.utf8))
        #expect(gpus.first?.migMode == "Enabled")
        #expect(gpus.first?.migDevices == [])
    }

    @Test("-L, current form: every device gets its profile and MIG- UUID, matched by its GPU's UUID and its index")
    func currentListing() throws {
        let parsed = try GPUDiscovery.parse(xml: GPUDiscoveryTests.fixture("a100-40gb-mig"))
        let gpus = GPUDiscovery.withMIGListing(parsed, listing: try Self.listing("a100-40gb-mig-L"))
        let devices = try #require(gpus.first?.migDevices)
        #expect(devices.map(\.profile) == ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"])
        #expect(devices.map(\.uuid) == Self.a100MIGs)
        // What -q -x said is left as it was.
        #expect(devices.map(\.gpuInstance) == [1, 5, 13, 14])
        #expect(devices.map(\.memoryMiB) == [19_968, 9_856, 4_864, 4_864])
        #expect(gpus.map(\.uuid) == Self.a100GPUs)
    }

    @Test("-L before driver 470: the MIG-GPU-<uuid>/GI/CI names are the devices' UUIDs, with their profiles")
    func legacyListing() throws {
        let parsed = try GPUDiscovery.parse(xml: GPUDiscoveryTests.fixture("a100-40gb-mig"))
        let gpus = GPUDiscovery.withMIGListing(parsed, listing: try Self.listing("legacy-mig-L"))
        let devices = try #require(gpus.first?.migDevices)
        #expect(devices.map(\.profile) == ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"])
        let gpu0 = Self.a100GPUs[0]
        #expect(devices.map(\.uuid) == ["MIG-\(gpu0)/1/0", "MIG-\(gpu0)/5/0", "MIG-\(gpu0)/13/0", "MIG-\(gpu0)/14/0"])
        // The old name spells out the instances: they agree with what -q -x says of each device.
        #expect(devices.allSatisfy { $0.uuid.hasSuffix("/\($0.gpuInstance)/\($0.computeInstance)") })
        #expect(gpus[1].migDevices == nil)
    }

    @Test("H200 and H100, -L with CRLF line ends: seven 1g.18gb, then a 3g.40gb and a 1g.10gb, each with a clean MIG- UUID")
    func hopperCRLF() throws {
        let text = try Self.listing("h200-mig-L")
        #expect(text.contains("\r\n"))  // the fixture keeps its CRLF line ends
        let parsed = try GPUDiscovery.parse(xml: GPUDiscoveryTests.fixture("h200-mig"))
        let gpus = GPUDiscovery.withMIGListing(parsed, listing: text)
        try #require(gpus.count == 2)
        #expect(gpus.map(\.memoryMiB) == [143_771, 81_559])
        let h200 = try #require(gpus[0].migDevices)
        #expect(h200.map(\.index) == Array(0...6))
        #expect(h200.map(\.gpuInstance) == Array(7...13))
        #expect(h200.allSatisfy { $0.computeInstance == 0 && $0.memoryMiB == 16_384 && $0.profile == "1g.18gb" })
        #expect(h200.allSatisfy { $0.uuid.hasPrefix("MIG-") && $0.uuid.count == 40 })
        #expect(Set(h200.map(\.uuid)).count == 7)
        #expect(h200.first?.uuid == "MIG-0b7c2e91-4d5a-5f38-a1e6-9c3d7b2f8e40")
        // The H100's device 0 is its own 3g.40gb, not the H200's device 0.
        let h100 = try #require(gpus[1].migDevices)
        #expect(h100.map(\.profile) == ["3g.40gb", "1g.10gb"])
        #expect(h100.map(\.uuid) == ["MIG-6f2d8a14-e5c9-5b30-9a7e-1d4b0c8f3e26", "MIG-b4e71c09-8d3a-5e52-a0f9-7c2d6e1b4a38"])
        #expect(h100.map(\.gpuInstance) == [2, 9])
        #expect(h100.map(\.memoryMiB) == [40_448, 9_984])
    }

    @Test("migListing: keyed by GPU UUID then device index; profiles lowercased; CRLF and trailing spaces tolerated")
    func listingParser() throws {
        let listed = GPUDiscovery.migListing(try Self.listing("h200-mig-L"))
        #expect(listed.count == 2)
        #expect(listed["GPU-f2b87d14-9c3a-41e6-0d58-7a1c6e9b3f20"]?.count == 7)
        #expect(listed["GPU-6c0d9e27-4b1f-a358-e2d7-9f4a1b8c5e63"]?[1]?.profile == "1g.10gb")
        let odd = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)   \r\n  MIG 1G.10GB     Device  0: (UUID: MIG-bbbb)  \r\n\r\n"
        let parsed = GPUDiscovery.migListing(odd)
        #expect(parsed["GPU-aaaa"]?[0]?.profile == "1g.10gb")
        #expect(parsed["GPU-aaaa"]?[0]?.uuid == "MIG-bbbb")
        // A GPU with MIG off lists no devices, and has no entry.
        let legacy = GPUDiscovery.migListing(try Self.listing("legacy-mig-L"))
        #expect(legacy[Self.a100GPUs[0]]?.count == 4)
        #expect(legacy[Self.a100GPUs[1]] == nil)
        #expect(GPUDiscovery.migListing("").isEmpty)
        #expect(GPUDiscovery.migListing("No devices were found").isEmpty)
    }

    @Test("a device -L does not name keeps no UUID and no profile; the others get theirs")
    func unlistedDevice() throws {
        let partial = """
            GPU 0: NVIDIA A100-SXM4-40GB (UUID: \(Self.a100GPUs[0]))
              MIG 3g.20gb     Device  0: (UUID: \(Self.a100MIGs[0]))
              MIG 2g.10gb     Device  1: (UUID: \(Self.a100MIGs[1]))
              MIG 1g.5gb      Device  3: (UUID: \(Self.a100MIGs[3]))
            GPU 1: NVIDIA A100-SXM4-40GB (UUID: \(Self.a100GPUs[1]))
            """
        let parsed = try GPUDiscovery.parse(xml: GPUDiscoveryTests.fixture("a100-40gb-mig"))
        let devices = try #require(GPUDiscovery.withMIGListing(parsed, listing: partial).first?.migDevices)
        try #require(devices.count == 4)
        #expect(devices.map(\.uuid) == [Self.a100MIGs[0], Self.a100MIGs[1], "", Self.a100MIGs[3]])
        #expect(devices.map(\.profile) == ["3g.20gb", "2g.10gb", nil, "1g.5gb"])
        #expect(devices[2].gpuInstance == 13 && devices[2].memoryMiB == 4_864)
    }

    @Test("devices -L lists under another GPU's UUID are not taken, even at the same indices")
    func otherGPUsListing() throws {
        let parsed = try GPUDiscovery.parse(xml: GPUDiscoveryTests.fixture("a100-40gb-mig"))
        let gpus = GPUDiscovery.withMIGListing(parsed, listing: try Self.listing("h200-mig-L"))
        let devices = try #require(gpus.first?.migDevices)
        #expect(devices.allSatisfy { $0.uuid == "" && $0.profile == nil })
    }

    @Test("migPending only for the GPU whose pending MIG mode differs from its current one")
    func pending() throws {
        let gpus = try GPUDiscovery.parse(xml: GPUDiscoveryTests.fixture("a100-mig-pending"))
        try #require(gpus.count == 2)
        // Enabled at the next reset: no devices until then, and no new work.
        #expect(gpus[0].migMode == "Disabled")
        #expect(gpus[0].migPending == true)
        #expect(gpus[0].migDevices == nil)
        // Enabled and staying so.
        #expect(gpus[1].migMode == "Enabled")
        #expect(gpus[1].migPending == nil)
        let devices = try #require(gpus[1].migDevices)
        #expect(devices.count == 1)
        #expect(devices.first.map { [$0.index, $0.gpuInstance, $0.computeInstance, $0.memoryMiB] } == [0, 0, 0, 80_896])
        #expect(gpus.map(\.memoryMiB) == [81_920, 81_920])
    }

    @Test("nvidiaSMI(path:) runs -q -x, topo -m and -L: MIG devices come back with their UUIDs and profiles")
    func endToEnd() throws {
        let xml = try Self.path("a100-40gb-mig", "xml")
        let listing = try Self.path("a100-40gb-mig-L", "txt")
        // The two A100s on NVLink (NV12 on an SXM4 board).
        let matrix = FileManager.default.temporaryDirectory.appendingPathComponent("topo-\(UUID().uuidString).txt")
        try "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\nGPU0\t X \tNV12\t0-63\t0\nGPU1\tNV12\t X \t0-63\t0\n"
            .write(to: matrix, atomically: true, encoding: .utf8)
        let dir = try GPUDiscoveryTests.fakeNvidiaSMI(
            """
            case "$*" in
              "-q -x") cat '\(xml)' ;;
              "topo -m") cat '\(matrix.path)' ;;
              "-L") cat '\(listing)' ;;
              *) exit 9 ;;
            esac
            """)
        let gpus = try #require(try GPUDiscoveryTests.discover(path: dir.appendingPathComponent("nvidia-smi").path))
        try #require(gpus.count == 2)
        let devices = try #require(gpus[0].migDevices)
        #expect(devices.map(\.uuid) == Self.a100MIGs)
        #expect(devices.map(\.profile) == ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"])
        #expect(devices.map(\.gpuInstance) == [1, 5, 13, 14])
        #expect(gpus[1].migDevices == nil)
        #expect(gpus.map(\.nvlinkDomain) == [0, 0])
    }

    @Test("nvidiaSMI(path:) when topo -m and -L fail: the GPUs and their devices still come back, the devices without UUIDs")
    func endToEndWithoutListing() throws {
        let xml = try Self.path("a100-40gb-mig", "xml")
        let dir = try GPUDiscoveryTests.fakeNvidiaSMI(
            """
            case "$*" in
              "-q -x") cat '\(xml)' ;;
              "topo -m") echo "Failed to run topology" >&2; exit 3 ;;
              "-L") echo "Insufficient Permissions" >&2; exit 4 ;;
              *) exit 9 ;;
            esac
            """)
        let gpus = try #require(try GPUDiscoveryTests.discover(path: dir.appendingPathComponent("nvidia-smi").path))
        try #require(gpus.count == 2)
        let devices = try #require(gpus[0].migDevices)
        #expect(devices.map(\.gpuInstance) == [1, 5, 13, 14])
        #expect(devices.allSatisfy { $0.uuid == "" && $0.profile == nil })
        // Neither the matrix nor a fabric clique names a domain.
        #expect(gpus.map(\.nvlinkDomain) == [nil, nil])
    }

    @Test("nvidiaSMI(path:) does not run -L where no GPU has MIG devices")
    func noListingWithoutDevices() throws {
        let xml = try Self.path("h100-sxm", "xml")
        let marker = FileManager.default.temporaryDirectory.appendingPathComponent("listed-\(UUID().uuidString)")
        let dir = try GPUDiscoveryTests.fakeNvidiaSMI(
            """
            case "$*" in
              "-q -x") cat '\(xml)' ;;
              "topo -m") exit 3 ;;
              "-L") : > '\(marker.path)' ;;
              *) exit 9 ;;
            esac
            """)
        let gpus = try #require(try GPUDiscoveryTests.discover(path: dir.appendingPathComponent("nvidia-smi").path))
        #expect(gpus.count == 2)
        #expect(gpus.allSatisfy { $0.migDevices == nil })
        #expect(!FileManager.default.fileExists(atPath: marker.path))
    }
}
