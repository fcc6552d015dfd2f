import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A real headless Chromium, driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: fd 3 in,
/// fd 4 out, one JSON message per NUL): enough to type into the page and read what it shows. Written by hand
/// because the protocol over a pipe is a few messages, where a driver (Playwright, Selenium) would be a runtime
/// of its own in CI. Blocking: call it off the concurrency pool (`offPool`).
final class Browser {
    let pid: pid_t
    private let commands: Int32
    private let events: Int32
    private var buffer: [UInt8] = []
    private var nextID = 0
    private var session: String?
    private let profile: String

    struct Failure: Error, CustomStringConvertible { let description: String }

    init(chromium: String) throws {
        var toBrowser: [Int32] = [0, 0]
        var fromBrowser: [Int32] = [0, 0]
        guard pipe(&toBrowser) == 0, pipe(&fromBrowser) == 0 else { throw Failure(description: "pipe: \(errno)") }
        // Only the ends dup2'd to fds 3 and 4 reach the browser.
        for fd in toBrowser + fromBrowser { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        self.profile = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-\(UUID().uuidString)").path
        let arguments = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--user-data-dir=\(self.profile)",
            "--window-size=1280,900", "--no-first-run", "about:blank",
        ]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toBrowser[0], 3)
        posix_spawn_file_actions_adddup2(&actions, fromBrowser[1], 4)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var pid: pid_t = 0
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let status = posix_spawn(&pid, chromium, &actions, nil, argv, environ)
        close(toBrowser[0])
        close(fromBrowser[1])
        guard status == 0 else { throw Failure(description: "cannot start \(chromium): \(status)") }
        self.pid = pid
        self.commands = toBrowser[1]
        self.events = fromBrowser[0]
    }

    deinit {
        kill(self.pid, SIGKILL)
        var status: Int32 = 0
        waitpid(self.pid, &status, 0)
        close(self.commands)
        close(self.events)
        try? FileManager.default.removeItem(atPath: self.profile)
    }

    /// Sends a command (to the page once `open` has attached to one) and returns its result.
    @discardableResult
    func send(_ method: String, _ params: [String: Any] = [:], toPage: Bool = true) throws -> [String: Any] {
        self.nextID += 1
        let id = self.nextID
        var message: [String: Any] = ["id": id, "method": method, "params": params]
        if toPage, let session = self.session { message["sessionId"] = session }
        var bytes = Array(try JSONSerialization.data(withJSONObject: message))
        bytes.append(0)
        guard bytes.withUnsafeBytes({ write(self.commands, $0.baseAddress, $0.count) }) == bytes.count else {
            throw Failure(description: "the browser closed its pipe")
        }
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let reply = try self.read(until: deadline)
            guard reply["id"] as? Int == id else { continue }  // an event, or another reply
            if let error = reply["error"] as? [String: Any] { throw Failure(description: "\(method): \(error)") }
            return reply["result"] as? [String: Any] ?? [:]
        }
        throw Failure(description: "\(method): no answer in 30 s")
    }

    private func read(until deadline: Date) throws -> [String: Any] {
        while true {
            if let end = self.buffer.firstIndex(of: 0) {
                let message = Array(self.buffer[..<end])
                self.buffer.removeSubrange(...end)
                return (try JSONSerialization.jsonObject(with: Data(message)) as? [String: Any]) ?? [:]
            }
            var poll = pollfd(fd: self.events, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&poll, 1, Int32(max(1, deadline.timeIntervalSinceNow * 1000))) > 0 else {
                throw Failure(description: "no message from the browser")
            }
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            let n = Glibc.read(self.events, &chunk, chunk.count)
            guard n > 0 else { throw Failure(description: "the browser exited") }
            self.buffer += chunk[..<n]
        }
    }

    /// Opens a page and attaches to it, so that later commands go to it.
    func open(_ url: String) throws {
        let target = try self.send("Target.createTarget", ["url": "about:blank"], toPage: false)
        guard let id = target["targetId"] as? String else { throw Failure(description: "no target") }
        let attached = try self.send("Target.attachToTarget", ["targetId": id, "flatten": true], toPage: false)
        self.session = attached["sessionId"] as? String
        try self.send("Page.enable")
        try self.navigate(url)
    }

    func navigate(_ url: String) throws {
        try self.send("Page.navigate", ["url": url])
        try self.waitForLoad()
    }

    /// Waits until the document has loaded (after a navigation, a form's submission or a redirect).
    func waitForLoad(previous: String? = nil) throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let ready = try self.evaluate("document.readyState") as? String == "complete"
            let moved = try previous == nil || self.evaluate("location.href") as? String != previous
            if ready && moved { return }
            usleep(100_000)
        }
        throw Failure(description: "the page did not load")
    }

    /// Evaluates JavaScript in the page (DevTools evaluates whatever the page's own CSP allows) and returns its value.
    func evaluate(_ expression: String) throws -> Any? {
        let result = try self.send("Runtime.evaluate", ["expression": expression, "returnByValue": true, "awaitPromise": true])
        return (result["result"] as? [String: Any])?["value"]
    }

    var html: String { (try? self.evaluate("document.documentElement.outerHTML") as? String) ?? "" }

    func screenshot(to path: String) throws {
        let shot = try self.send("Page.captureScreenshot", ["format": "png"])
        guard let data = (shot["data"] as? String).flatMap({ Data(base64Encoded: $0) }) else { throw Failure(description: "no screenshot") }
        try data.write(to: URL(fileURLWithPath: path))
    }

    /// The browser's cookie `name` for `url` (which the page's own script cannot see when HttpOnly), its
    /// attributes as text: `httpOnly`, `secure`, `sameSite`, `value`.
    func cookie(_ name: String, for url: String) throws -> [String: String]? {
        let all = try self.send("Network.getCookies", ["urls": [url]])["cookies"] as? [[String: Any]] ?? []
        return all.first { $0["name"] as? String == name }.map { c in c.mapValues { "\($0)" } }
    }
}
