/// The system calls a rank may not make, as a seccomp filter for runc: what the runtime defaults of Docker and
/// Kubernetes refuse to unprivileged containers, kept as a deny-list (everything else is allowed, so CUDA, NCCL,
/// MPI and Python work as on the host). Refused calls fail with EPERM, as if the kernel said no.
enum Seccomp {
    static let denied: [String] = [
        // New namespaces (a user namespace is the usual first step of a kernel exploit) and mounts.
        "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
        // Kernel keyrings, BPF, perf, userfaultfd and io_uring: large attack surfaces no training job needs.
        "add_key", "request_key", "keyctl", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
        // The machine itself.
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl",
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime", "syslog", "lookup_dcookie", "nfsservctl", "uselib", "vhangup",
        "iopl", "ioperm", "create_module", "get_kernel_syms", "query_module", "open_by_handle_at", "name_to_handle_at",
    ]

    /// The namespace flags of clone(): CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
    static let namespaceFlags: [UInt64] = [0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000]

    /// clone() with any namespace flag is refused (one rule per flag: the rules of one call are ORed, the
    /// conditions of one rule ANDed); threads and plain forks are not. clone3 cannot be filtered by its flags:
    /// it is refused with ENOSYS, so C libraries fall back to clone.
    static var profile: OCISpec.Seccomp {
        OCISpec.Seccomp(
            defaultAction: "SCMP_ACT_ALLOW", architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
            syscalls: [
                .init(names: self.denied, action: "SCMP_ACT_ERRNO", errnoRet: 1, args: nil),
                .init(names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38, args: nil),
            ]
                + self.namespaceFlags.map { flag in
                    .init(
                        names: ["clone"], action: "SCMP_ACT_ERRNO", errnoRet: 1,
                        args: [.init(index: 0, value: flag, valueTwo: flag, op: "SCMP_CMP_MASKED_EQ")])
                })
    }
}
