import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The Unix account a rank runs as, resolved on this node (the passwd database: files, LDAP, SSSD, whatever
/// nsswitch says) from the name or `uid:gid` that Policies/ gives its organisation.
struct Account: Hashable, Sendable {
    var name: String
    var uid: UInt32
    var gid: UInt32
    /// Its supplementary groups on this node.
    var groups: [UInt32]

    enum Problem: Error, CustomStringConvertible, Equatable {
        case unknown(String)
        case privileged(String)
        case agentsOwn(String)
        case privilegedGroup(String, String)

        var description: String {
            switch self {
            case .unknown(let a):
                "the account '\(a)' does not exist on this node (create it, or name another in Policies/ organizations[].account)"
            case .privileged(let a): "the account '\(a)' is root: jobs never run as root"
            case .agentsOwn(let a): "the account '\(a)' is the agent's own: jobs never run as the agent"
            case .privilegedGroup(let a, let g): "the account '\(a)' has the privileged group '\(g)' as its own: jobs never run with it"
            }
        }
    }

    /// Resolves `text`; refuses root, the agent's own account, and a name this node does not know.
    static func resolve(_ text: String) throws(Problem) -> Account {
        var account: Account
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        if parts.count == 2, let uid = UInt32(parts[0]), let gid = UInt32(parts[1]) {
            account = Account(name: text, uid: uid, gid: gid, groups: [])
            if let pw = getpwuid(uid) { account.name = String(cString: pw.pointee.pw_name) }
        } else {
            guard let pw = getpwnam(text) else { throw .unknown(text) }
            account = Account(name: text, uid: pw.pointee.pw_uid, gid: pw.pointee.pw_gid, groups: [])
        }
        guard account.uid != 0 && account.gid != 0 else { throw .privileged(text) }
        guard account.uid != getuid() || getuid() == 0 else { throw .agentsOwn(text) }
        if let group = Self.groupName(account.gid), Self.privilegedGroups.contains(group) { throw .privilegedGroup(text, group) }
        // Supplementary groups that grant more than a job needs are not passed on.
        account.groups = Self.groups(of: account.name, primary: account.gid).filter {
            Self.groupName($0).map { !Self.privilegedGroups.contains($0) } ?? true
        }
        return account
    }

    /// Groups whose members read secrets or command the machine: never a rank's.
    static let privilegedGroups: Set<String> = [
        "root", "wheel", "sudo", "admin", "adm", "shadow", "disk", "kmem", "docker", "lxd", "libvirt", "kvm", "systemd-journal", "tty", "allot-agent",
    ]

    static func groupName(_ gid: UInt32) -> String? { getgrgid(gid).map { String(cString: $0.pointee.gr_name) } }

    /// The account's supplementary groups (getgrouplist), without its primary group and never root's.
    private static func groups(of name: String, primary: UInt32) -> [UInt32] {
        var count: Int32 = 64
        var list = [gid_t](repeating: 0, count: Int(count))
        guard getgrouplist(name, primary, &list, &count) >= 0 else { return [] }
        return list.prefix(Int(count)).filter { $0 != primary && $0 != 0 }
    }
}
