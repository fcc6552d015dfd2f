public import AllotCore
public import Foundation

/// Reads NVIDIA XID events from the kernel log, where this process may read it (`dmesg`, or the binary named by
/// `ALLOT_DMESG`). Lines look like
/// `[ 8134.567890] NVRM: Xid (PCI:0000:3b:00): 79, pid=2417, name=python3, GPU has fallen off the bus.`
public enum KernelLog {
    /// The XID events of the kernel log, attached to the GPUs whose PCI bus they name.
    public static func attachXids(to gpus: [GPUInfo], environment: [String: String] = ProcessInfo.processInfo.environment) -> [GPUInfo] {
        guard let text = self.read(environment: environment) else { return gpus }
        return self.attach(self.parse(text), to: gpus)
    }

    static func read(environment: [String: String]) -> String? {
        let path = environment["ALLOT_DMESG"] ?? "/usr/bin/dmesg"
        guard FileManager.default.isExecutableFile(atPath: path) else { return nil }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return p.terminationStatus == 0 ? String(decoding: data, as: UTF8.self) : nil
    }

    /// (PCI address as `0000:3b:00`, event) for every XID line.
    public static func parse(_ text: String) -> [(pci: String, event: XidEvent)] {
        var out: [(String, XidEvent)] = []
        for line in text.split(separator: "\n") {
            guard let xid = line.range(of: "NVRM: Xid (PCI:") else { continue }
            let rest = line[xid.upperBound...]
            guard let close = rest.firstIndex(of: ")") else { continue }
            let pci = rest[..<close].lowercased()
            let after = rest[rest.index(after: close)...].drop { $0 == ":" || $0 == " " }
            let number = after.prefix { $0.isNumber }
            guard let code = Int(number) else { continue }
            let stamp =
                line.hasPrefix("[")
                ? String(line[line.index(after: line.startIndex)..<(line.firstIndex(of: "]") ?? line.endIndex)]).trimmingCharacters(in: .whitespaces)
                : String(line.prefix(32))
            let message = after.dropFirst(number.count).drop { $0 == "," || $0 == " " }
            out.append((pci, XidEvent(xid: code, at: stamp, message: String(message.prefix(200)))))
        }
        return out
    }

    /// nvidia-smi writes bus ids as `00000000:3B:00.0`, the kernel as `0000:3b:00`: compare domain (last four
    /// digits), bus and device.
    static func key(_ pci: String) -> String {
        let parts = pci.lowercased().split(separator: ":")
        guard parts.count >= 3 else { return pci.lowercased() }
        let domain = String(parts[parts.count - 3].suffix(4))
        let device = parts[parts.count - 1].split(separator: ".").first ?? ""
        return "\(domain):\(parts[parts.count - 2]):\(device)"
    }

    public static func attach(_ events: [(pci: String, event: XidEvent)], to gpus: [GPUInfo]) -> [GPUInfo] {
        var gpus = gpus
        for (i, gpu) in gpus.enumerated() {
            guard let bus = gpu.pciBusID.map(self.key) else { continue }
            gpus[i].xids = events.filter { self.key($0.pci) == bus }.map(\.event)
        }
        return gpus
    }
}
