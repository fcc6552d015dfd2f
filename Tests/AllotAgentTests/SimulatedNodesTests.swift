import AllotAgent
import Testing

@Suite("Simulated nodes")
struct SimulatedNodesTests {
    @Test(
        "a simulated rank runs for its command's leading sleep, in seconds, else not at all",
        arguments: [
            ("sleep 30", 30.0), ("sleep 0.5; echo done", 0.5), ("sleep 2s", 2), ("true", 0), ("echo sleep 9", 0), ("sleep", 0), ("sleep -3", 0),
            ("sleep\n4", 4),
        ])
    func runSeconds(command: String, seconds: Double) {
        #expect(SimulatedNodes.runSeconds(of: command) == seconds)
    }
}
