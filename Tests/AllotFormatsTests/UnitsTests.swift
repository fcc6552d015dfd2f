import AllotFormats
import Testing

@Suite("Durations and sizes")
struct UnitsTests {
    @Test(
        "suffixed durations",
        arguments: [
            ("90s", 90), ("45m", 2700), ("48h", 172_800), ("2d", 172_800), ("1h30m", 5400), ("1d2h3m4s", 93_784),
        ] as [(String, Int64)])
    func suffixed(text: String, seconds: Int64) { #expect(Units.durationSeconds(text) == seconds) }

    @Test(
        "Slurm's --time forms: minutes when bare",
        arguments: [
            ("30", 1800),  // MM
            ("30:15", 1815),  // MM:SS
            ("2:30:15", 9015),  // HH:MM:SS
            ("1-12", 129_600),  // D-HH
            ("1-12:30", 131_400),  // D-HH:MM
            ("1-12:30:15", 131_415),  // D-HH:MM:SS
            ("0-0:0:1", 1),
        ] as [(String, Int64)])
    func slurm(text: String, seconds: Int64) { #expect(Units.durationSeconds(text) == seconds) }

    @Test("malformed durations are refused", arguments: ["", "abc", "1x", "1:2:3:4", "-5", "1-", "1m2h", "5ss", "1--2"])
    func malformed(text: String) { #expect(Units.durationSeconds(text) == nil) }

    @Test(
        "sizes in MiB",
        arguments: [
            ("512", 512), ("512M", 512), ("64G", 65536), ("64Gi", 65536), ("64GB", 65536), ("1T", 1_048_576), ("1.5G", 1536), ("2048K", 2),
            ("10g", 10240),
        ] as [(String, Int)])
    func sizes(text: String, mib: Int) { #expect(Units.mebibytes(text) == mib) }

    @Test("malformed sizes are refused", arguments: ["", "G", "12Q", "-1G", "one"])
    func badSizes(text: String) { #expect(Units.mebibytes(text) == nil) }
}
