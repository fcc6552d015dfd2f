public import AllotCore
public import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// Finds a node's GPUs: simulated (`--gpus 8xH200`) or from `nvidia-smi -q -x`.
public enum GPUDiscovery {
    public enum Failure: Error, CustomStringConvertible {
        case badSimulation(String)
        case nvidiaSMIMissing(String)
        case nvidiaSMIFailed(status: Int32, output: String)
        case unreadableXML(String)

        public var description: String {
            switch self {
            case .badSimulation(let s): "--gpus: '\(s)' must be COUNTxMODEL, as 8xH200 (several separated by commas)"
            case .nvidiaSMIMissing(let path): "nvidia-smi not found at \(path) (set ALLOT_NVIDIA_SMI, or use --gpus to simulate)"
            case .nvidiaSMIFailed(let status, let output): "nvidia-smi -q -x exited with \(status): \(output.prefix(500))"
            case .unreadableXML(let why): "cannot read nvidia-smi's XML: \(why)"
            }
        }
    }

    /// Memory of a simulated GPU by model, in MiB, as nvidia-smi reports for the real part.
    static let simulatedMemoryMiB: [String: Int] = [
        "H200": 143_771, "H100": 81_559, "A100": 81_920, "L40S": 46_068, "B200": 183_359, "GH200": 97_871, "A10": 23_028,
    ]

    /// The product name nvidia-smi gives the real part, by model.
    static let simulatedProductNames: [String: String] = [
        "H200": "NVIDIA H200", "H100": "NVIDIA H100 80GB HBM3", "A100": "NVIDIA A100-SXM4-80GB", "L40S": "NVIDIA L40S", "B200": "NVIDIA B200",
        "GH200": "NVIDIA GH200 480GB", "A10": "NVIDIA A10",
    ]

    /// `8xH200`, or `4xH100,4xA100`: indices in order, one NVLink domain per model group, PCI bus ids from
    /// `00000000:18:00.0` on (what a fault fixture's kernel log lines name).
    public static func simulated(_ spec: String, node: String) throws(Failure) -> [GPUInfo] {
        var gpus: [GPUInfo] = []
        for (domain, part) in spec.split(separator: ",").enumerated() {
            let pieces = part.lowercased().split(separator: "x", maxSplits: 1)
            guard pieces.count == 2, let count = Int(pieces[0]), (1...64).contains(count), !pieces[1].isEmpty else {
                throw .badSimulation(spec)
            }
            let model = String(part.split(separator: "x", maxSplits: 1)[1]).uppercased()
            for _ in 0..<count {
                let i = gpus.count
                gpus.append(
                    GPUInfo(
                        index: i, uuid: "GPU-sim-\(node)-\(i)", model: model, memoryMiB: self.simulatedMemoryMiB[model] ?? 81_920,
                        nvlinkDomain: domain, migMode: "Disabled", pciBusID: String(format: "00000000:%02X:00.0", 0x18 + i), minorNumber: i))
                gpus[i].productName = self.simulatedProductNames[model]
            }
        }
        if gpus.isEmpty { throw .badSimulation(spec) }
        return gpus
    }

    /// The nvidia-smi to run: `ALLOT_NVIDIA_SMI`, else the first on PATH.
    public static func nvidiaSMIPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let explicit = environment["ALLOT_NVIDIA_SMI"], !explicit.isEmpty { return explicit }
        for dir in (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(dir)/nvidia-smi"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return "nvidia-smi"
    }

    /// Runs `nvidia-smi -q -x` and parses its XML; then `nvidia-smi topo -m` for the NVLink domains, where it
    /// answers (without it, the fabric clique where the XML gives one).
    public static func nvidiaSMI(path: String) throws -> [GPUInfo] {
        guard FileManager.default.isExecutableFile(atPath: path) else { throw Failure.nvidiaSMIMissing(path) }
        let (status, data, errors) = try self.run(path, ["-q", "-x"])
        // nvidia-smi exits non-zero when one GPU is lost but still prints the others: parse what there is.
        if data.isEmpty || (status != 0 && !String(decoding: data, as: UTF8.self).contains("<gpu")) {
            throw Failure.nvidiaSMIFailed(status: status, output: String(decoding: errors + data, as: UTF8.self))
        }
        var gpus = try self.parse(xml: data)
        let topology = try? self.run(path, ["topo", "-m"])
        gpus = self.withTopology(gpus, matrix: topology.flatMap { $0.status == 0 ? String(decoding: $0.out, as: UTF8.self) : nil })
        // MIG devices' UUIDs and profiles are only in `-L`'s listing.
        // Whatever it lists is taken even when it exits non-zero (one lost GPU): devices are matched by their GPU's UUID.
        if gpus.contains(where: { !($0.migDevices ?? []).isEmpty }), let listing = try? self.run(path, ["-L"]) {
            gpus = self.withMIGListing(gpus, listing: String(decoding: listing.out, as: UTF8.self))
        }
        return gpus
    }

    /// The MIG devices of `nvidia-smi -L`, by their GPU's UUID and their device index: profile and UUID. Both the
    /// current form (`MIG 1g.10gb     Device  0: (UUID: MIG-…)`) and the one before driver 470
    /// (`MIG 1g.5gb Device 0: (UUID: MIG-GPU-…/7/0)`) are read; CRLF and stray spaces are tolerated.
    public static func migListing(_ text: String) -> [String: [Int: (profile: String, uuid: String)]] {
        var out: [String: [Int: (profile: String, uuid: String)]] = [:]
        var gpu: String?
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard let open = line.range(of: "(UUID: "), let close = line[open.upperBound...].firstIndex(of: ")") else {
                // A GPU line without a UUID (a lost GPU's error): the MIG lines after it are not the previous GPU's.
                if line.hasPrefix("GPU ") { gpu = nil }
                continue
            }
            let uuid = String(line[open.upperBound..<close]).trimmingCharacters(in: .whitespaces)
            let words = line[..<open.lowerBound].split(separator: " ")
            if words.first == "GPU" {
                gpu = uuid
            } else if words.first == "MIG", words.count >= 4, let k = words.firstIndex(of: "Device"), k + 1 < words.count,
                let index = Int(words[k + 1].trimmingCharacters(in: CharacterSet(charactersIn: ":"))), let gpu
            {
                out[gpu, default: [:]][index] = (String(words[1]).lowercased(), uuid)
            }
        }
        return out
    }

    /// Each MIG device with the profile and UUID `-L` gives it (matched by its GPU's UUID and its index); a device
    /// `-L` does not list keeps no UUID, and no work can be given it.
    public static func withMIGListing(_ gpus: [GPUInfo], listing: String) -> [GPUInfo] {
        let listed = self.migListing(listing)
        return gpus.map { gpu in
            var gpu = gpu
            gpu.migDevices = gpu.migDevices?.map { d in
                var d = d
                if let found = listed[gpu.uuid]?[d.index] {
                    d.profile = found.profile
                    d.uuid = found.uuid
                }
                return d
            }
            return gpu
        }
    }

    /// Each GPU's NVLink domain from `nvidia-smi topo -m` where the matrix names it; the others as they were.
    public static func withTopology(_ gpus: [GPUInfo], matrix: String?) -> [GPUInfo] {
        guard let matrix, let domains = GPUTopology.nvlinkDomains(matrix: matrix) else { return gpus }
        return gpus.map { gpu in
            var gpu = gpu
            if let d = domains[gpu.index] { gpu.nvlinkDomain = d }
            return gpu
        }
    }

    private static func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, out: Data, err: Data) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, data, errors)
    }

    /// Parses `nvidia-smi -q -x`. The index of a GPU is its position in the document: nvidia-smi lists GPUs
    /// in PCI bus order, which is also the order `CUDA_DEVICE_ORDER=PCI_BUS_ID` gives CUDA.
    public static func parse(xml data: Data) throws -> [GPUInfo] {
        let document: XMLDocument
        do {
            document = try XMLDocument(data: data, options: [])
        } catch {
            throw Failure.unreadableXML("\(error)")
        }
        guard let root = document.rootElement(), root.name == "nvidia_smi_log" else {
            throw Failure.unreadableXML("the root element is not <nvidia_smi_log>")
        }
        return root.elements(forName: "gpu").enumerated().map { index, gpu in self.gpu(gpu, index: index) }
    }

    static func gpu(_ gpu: XMLElement, index: Int) -> GPUInfo {
        let busID = gpu.attribute(forName: "id")?.stringValue ?? "unknown"
        let name = self.text(gpu, "product_name") ?? "unknown"
        let uuid = self.text(gpu, "uuid") ?? "GPU-unknown-\(busID)"
        let memory = self.text(gpu, "fb_memory_usage/total").flatMap(self.mebibytes) ?? 0
        let mig = self.text(gpu, "mig_mode/current_mig")
        // A clique is the set of GPUs joined by one NVLink fabric (NVSwitch systems report it under <fabric>).
        let clique = self.text(gpu, "fabric/cliqueId").flatMap { Int($0) }
        let rawName = gpu.elements(forName: "product_name").first?.stringValue ?? ""
        let (health, detail) = self.health(gpu, productName: rawName)
        // The device node (/dev/nvidiaN) is by minor number, which need not be the index: containers get the GPU by it.
        let minor = self.text(gpu, "minor_number").flatMap { Int($0) }
        var info = GPUInfo(
            index: index, uuid: uuid, model: name == "unknown" ? name : self.model(from: name), memoryMiB: memory, nvlinkDomain: clique, migMode: mig,
            health: health, healthDetail: detail, pciBusID: busID == "unknown" ? nil : busID, minorNumber: minor)
        info.productName = name == "unknown" ? nil : name
        // A mode change waits for the GPU's reset: until then the GPU takes no new work.
        if let pending = self.text(gpu, "mig_mode/pending_mig"), let mig, pending != mig { info.migPending = true }
        if mig == "Enabled" { info.migDevices = self.migDevices(gpu) }
        return info
    }

    /// `<mig_devices>`: each device's index, GPU and compute instance and memory; "None" when none is made.
    static func migDevices(_ gpu: XMLElement) -> [MIGDevice] {
        guard let list = gpu.elements(forName: "mig_devices").first else { return [] }
        return list.elements(forName: "mig_device").compactMap { d in
            guard let index = self.text(d, "index").flatMap({ Int($0) }), let gi = self.text(d, "gpu_instance_id").flatMap({ Int($0) }),
                let ci = self.text(d, "compute_instance_id").flatMap({ Int($0) })
            else { return nil }
            return MIGDevice(
                index: index, uuid: "", profile: nil, gpuInstance: gi, computeInstance: ci,
                memoryMiB: self.text(d, "fb_memory_usage/total").flatMap(self.mebibytes) ?? 0)
        }
    }

    /// Grades what nvidia-smi says of a GPU's memory and bus. Uncorrectable ECC errors since boot, pages
    /// pending retirement, pending row remaps or a failed remap, and a GPU that fell off the bus are hardware
    /// faults: the GPU is quarantined. (Correctable errors are normal and ignored.)
    static func health(_ gpu: XMLElement, productName: String) -> (GPUHealth, String?) {
        let all = gpu.xmlString
        if all.contains("GPU is lost") || all.localizedCaseInsensitiveContains("fallen off the bus") || productName == "Unknown Error" {
            return (.quarantined, "the GPU fell off the bus (nvidia-smi: GPU is lost)")
        }
        var problems: [String] = []
        let uncorrectable = [
            "ecc_errors/volatile/double_bit/total", "ecc_errors/volatile/dram_uncorrectable", "ecc_errors/volatile/sram_uncorrectable",
            // Drivers from R550 split SRAM's uncorrectable errors in two.
            "ecc_errors/volatile/sram_uncorrectable_parity", "ecc_errors/volatile/sram_uncorrectable_secded",
        ]
        .compactMap { self.text(gpu, $0).flatMap { Int($0) } }.reduce(0, +)
        if uncorrectable > 0 { problems.append("\(uncorrectable) uncorrectable ECC errors since boot") }
        if let pending = self.text(gpu, "retired_pages/pending_retirement") ?? self.text(gpu, "retired_pages/pending_blacklist"),
            pending.lowercased() == "yes"
        {
            problems.append("memory pages pending retirement")
        }
        if self.text(gpu, "remapped_rows/remapped_row_pending")?.lowercased() == "yes" { problems.append("row remapping pending (reset needed)") }
        if self.text(gpu, "remapped_rows/remapped_row_failure")?.lowercased() == "yes" { problems.append("row remapping failed") }
        return problems.isEmpty ? (.healthy, nil) : (.quarantined, problems.joined(separator: "; "))
    }

    /// `NVIDIA H100 80GB HBM3` → `H100`; `NVIDIA A100-SXM4-80GB` → `A100`; `Tesla V100-SXM2-32GB` → `V100`.
    public static func model(from productName: String) -> String {
        let words = productName.replacingOccurrences(of: "-", with: " ").split(separator: " ").map(String.init)
        let skip: Set<String> = ["NVIDIA", "TESLA", "QUADRO", "GEFORCE", "RTX"]
        for w in words where !skip.contains(w.uppercased()) {
            if w.first?.isLetter == true && w.contains(where: \.isNumber) { return w.uppercased() }
        }
        return words.last { !skip.contains($0.uppercased()) }?.uppercased() ?? productName
    }

    static func text(_ element: XMLElement, _ path: String) -> String? {
        var current: XMLElement? = element
        for part in path.split(separator: "/") { current = current?.elements(forName: String(part)).first }
        guard let value = current?.stringValue?.trimmingCharacters(in: .whitespacesAndNewlines), !value.isEmpty else { return nil }
        // nvidia-smi writes N/A (and a few other words) for what a GPU does not support.
        if ["N/A", "Not Supported", "[N/A]", "Unknown Error", "[Not Supported]"].contains(value) { return nil }
        return value
    }

    /// `81559 MiB` → 81559.
    static func mebibytes(_ text: String) -> Int? {
        let parts = text.split(separator: " ")
        guard let n = parts.first.flatMap({ Int($0) }) else { return nil }
        switch parts.count > 1 ? parts[1].lowercased() : "mib" {
        case "gib": return n * 1024
        case "kib": return n / 1024
        default: return n
        }
    }
}
