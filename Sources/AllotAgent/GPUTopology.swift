/// A node's NVLink domains from `nvidia-smi topo -m`: GPUs joined by NVLink — directly (`NV#`, a bonded set of #
/// links), or through other GPUs, as an NVSwitch or a chain of bridges joins them — form one domain; a GPU reached
/// only over PCIe (`PIX`, `PXB`, `PHB`, `NODE`, `SYS`) is a domain of its own. Placement keeps a multi-GPU rank in
/// one domain when one can hold it. Read from the text, as nvidia-smi has no XML form of the matrix.
public enum GPUTopology {
    /// Per GPU index (nvidia-smi's numbering, the order of `-q -x`): its domain, named by the lowest index in it.
    /// Nil when the text holds no matrix of GPUs. Tolerates the terminal escapes newer nvidia-smi puts around the
    /// header, tabs or spaces, CRLF line ends, and NIC and affinity columns after the GPUs.
    public static func nvlinkDomains(matrix text: String) -> [Int: Int]? {
        let lines = self.withoutEscapes(text).split(whereSeparator: \.isNewline).map { $0.split(whereSeparator: \.isWhitespace) }
        // The header is the first line that starts with a GPU (rows follow it); its GPU columns are its leading GPUn
        // tokens (NIC columns and "CPU Affinity" come after them).
        guard let h = lines.firstIndex(where: { $0.first.map { self.gpuIndex($0) != nil } == true }) else { return nil }
        let columns = lines[h].prefix { self.gpuIndex($0) != nil }.compactMap { self.gpuIndex($0) }
        guard !columns.isEmpty else { return nil }
        var parent = Dictionary(uniqueKeysWithValues: columns.map { ($0, $0) })
        func root(_ g: Int) -> Int {
            var g = g
            while parent[g]! != g { g = parent[g]! }
            return g
        }
        var rows = 0
        for line in lines[(h + 1)...] where line.count > columns.count {
            // A row names its GPU, then one cell per column.
            guard let gpu = self.gpuIndex(line[0]), parent[gpu] != nil else { continue }
            rows += 1
            for (j, cell) in line.dropFirst().prefix(columns.count).enumerated() where self.isNVLink(cell) {
                let (a, b) = (root(gpu), root(columns[j]))
                parent[max(a, b)] = min(a, b)
            }
        }
        guard rows > 0 else { return nil }
        return Dictionary(uniqueKeysWithValues: columns.map { ($0, root($0)) })
    }

    /// `GPU3` → 3.
    static func gpuIndex(_ token: Substring) -> Int? {
        guard token.hasPrefix("GPU"), token.count > 3 else { return nil }
        return Int(token.dropFirst(3))
    }

    /// `NV1` … `NV18`: a bonded set of NVLinks.
    static func isNVLink(_ cell: Substring) -> Bool {
        cell.hasPrefix("NV") && cell.count > 2 && cell.dropFirst(2).allSatisfy(\.isNumber)
    }

    /// The text without ANSI escape sequences (ESC [ … letter), which newer nvidia-smi prints around its header.
    static func withoutEscapes(_ text: String) -> String {
        guard text.contains("\u{1B}") else { return text }
        var out = ""
        var inEscape = false
        for c in text.unicodeScalars {
            if inEscape {
                if c.properties.isAlphabetic { inEscape = false }
            } else if c == "\u{1B}" {
                inEscape = true
            } else {
                out.unicodeScalars.append(c)
            }
        }
        return out
    }
}
