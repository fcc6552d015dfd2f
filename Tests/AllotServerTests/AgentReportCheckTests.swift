import AllotCore
import Testing

@testable import AllotServer

/// What allotd refuses in an agent's report before it touches the inventory (each a 422 naming `gpus`).
@Suite struct AgentReportCheckTests {
    static func gpu(_ index: Int, _ uuid: String) -> GPUInfo { GPUInfo(index: index, uuid: uuid, model: "H200", memoryMiB: 1) }

    @Test("a GPU list with one UUID or one index twice, or an index nvidia-smi never gives, is a broken report")
    func gpuLists() {
        #expect(NodeRoutes.gpuListProblem([]) == nil)
        #expect(NodeRoutes.gpuListProblem([Self.gpu(0, "GPU-a"), Self.gpu(1, "GPU-b")]) == nil)
        // GPUs without UUIDs (old drivers, simulated nodes) are told apart by index alone.
        #expect(NodeRoutes.gpuListProblem([Self.gpu(0, ""), Self.gpu(1, "")]) == nil)
        #expect(NodeRoutes.gpuListProblem([Self.gpu(0, "GPU-a"), Self.gpu(1, "GPU-a")]) == "GPU GPU-a is listed twice")
        #expect(NodeRoutes.gpuListProblem([Self.gpu(3, "GPU-a"), Self.gpu(3, "GPU-b")]) == "index 3 is listed twice")
        #expect(NodeRoutes.gpuListProblem([Self.gpu(-1, "GPU-a")]) == "index -1 is outside 0...1023")
        #expect(NodeRoutes.gpuListProblem([Self.gpu(1024, "GPU-a")]) == "index 1024 is outside 0...1023")
        // MIG devices: a UUID twice (here, the GPU's own), or more devices than a GPU can be cut into.
        var cut = Self.gpu(0, "GPU-a")
        cut.migDevices = [MIGDevice(index: 0, uuid: "GPU-a", profile: "1g.10gb", gpuInstance: 1, computeInstance: 0, memoryMiB: 1)]
        #expect(NodeRoutes.gpuListProblem([cut]) == "MIG device GPU-a is listed twice")
        cut.migDevices = (0..<57).map {
            MIGDevice(index: $0, uuid: "MIG-\($0)", profile: "1g.10gb", gpuInstance: $0, computeInstance: 0, memoryMiB: 1)
        }
        #expect(NodeRoutes.gpuListProblem([cut]) == "GPU 0 lists 57 MIG devices (at most 56)")
        let long = String(repeating: "x", count: 5000)
        #expect(NodeRoutes.gpuListProblem([Self.gpu(0, long), Self.gpu(1, long)])!.utf8.count < 200)
    }
}
