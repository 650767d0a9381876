//! Two network namespaces joined by a veth pair, for tests of muster over
//! a real network: a daemon in one, its clients in the other, nothing but
//! the veth between them (each namespace has only its loopback and its veth
//! end). Made with iproute2's `ip netns`, so it needs root (CAP_SYS_ADMIN
//! and CAP_NET_ADMIN) and `ip`; deleted again when dropped, also when the
//! test panics (deleting a namespace removes its veth end, and so the pair).

#![allow(dead_code)]

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Pairs made by this process so far (for unique names).
static MADE: AtomicU32 = AtomicU32::new(0);

/// A daemon-side and a client-side namespace and the veth between them,
/// addressed on a /30: the daemon side `.1`, the client side `.2`.
pub struct NetPair {
    pub daemon_ns: String,
    pub client_ns: String,
    /// The daemon side's address, e.g. `10.231.17.1`.
    pub daemon_ip: String,
    /// The client side's address, e.g. `10.231.17.2`.
    pub client_ip: String,
}

impl NetPair {
    /// Makes the namespaces (named after this process and a counter), the
    /// veth pair between them, their addresses, and brings every link up,
    /// loopback included. Panics, saying what is needed, if it cannot.
    pub fn new() -> NetPair {
        let pid = std::process::id();
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        // Each pair is a network of its own, so two test processes that
        // picked the same subnet would not collide; the pid spreads them anyway.
        let subnet = format!("10.231.{}", (pid + n) % 250 + 1);
        let pair = NetPair {
            daemon_ns: format!("mu-d-{pid}-{n}"),
            client_ns: format!("mu-c-{pid}-{n}"),
            daemon_ip: format!("{subnet}.1"),
            client_ip: format!("{subnet}.2"),
        };
        // From here on Drop deletes whatever was made, should a step fail.
        for ns in [&pair.daemon_ns, &pair.client_ns] {
            ip(&["netns", "add", ns]);
        }
        let (d, c) = (pair.daemon_ns.as_str(), pair.client_ns.as_str());
        // Made inside the daemon's namespace with its peer put straight into
        // the client's: the names never appear in the host's namespace.
        ip(&[
            "-n", d, "link", "add", "veth-d", "type", "veth", "peer", "name", "veth-c", "netns", c,
        ]);
        ip(&[
            "-n",
            d,
            "addr",
            "add",
            &format!("{}/30", pair.daemon_ip),
            "dev",
            "veth-d",
        ]);
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{}/30", pair.client_ip),
            "dev",
            "veth-c",
        ]);
        for (ns, dev) in [(d, "lo"), (d, "veth-d"), (c, "lo"), (c, "veth-c")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        pair
    }

    /// `program` run inside the daemon's namespace (`ip netns exec`, which
    /// execs it: the child's pid is the program's own).
    pub fn in_daemon_ns(&self, program: impl AsRef<OsStr>) -> Command {
        exec_in(&self.daemon_ns, program)
    }

    /// `program` run inside the clients' namespace.
    pub fn in_client_ns(&self, program: impl AsRef<OsStr>) -> Command {
        exec_in(&self.client_ns, program)
    }

    /// Runs `f` on a thread of its own moved into the clients' namespace
    /// (setns(2)): sockets it opens, and threads it starts (a blocking
    /// reqwest client's runtime), are in that namespace. Its panic is
    /// this caller's.
    pub fn on_client_side<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.client_ns);
        std::thread::scope(|s| {
            let joined = s
                .spawn(|| {
                    let ns = std::fs::File::open(&path)
                        .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
                    // SAFETY: setns(2) on a descriptor we hold open; it
                    // changes only this thread's network namespace.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(
                        rc,
                        0,
                        "setns into {path}: {}",
                        std::io::Error::last_os_error()
                    );
                    f()
                })
                .join();
            joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.daemon_ns, &self.client_ns] {
            let _ = Command::new("ip")
                .args(["netns", "delete", ns])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn exec_in(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// `ip <args>`, which must succeed; else a panic saying what is needed.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `ip` ({e}): this test needs iproute2's `ip` on PATH, and root \
             (CAP_SYS_ADMIN, CAP_NET_ADMIN) to make network namespaces"
        )
    });
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {}; this test needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and \
         iproute2 with network namespace support (`ip netns add` must work)",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
