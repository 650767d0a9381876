//! What this machine charges for a wake: the kernel's part of handing work
//! from one process to another, which a delivered message pays several
//! times over (the shims and the daemon each sleep in `epoll_wait` until
//! the next frame arrives).
//!
//! Two threads play ping-pong with one byte over a Unix socket pair, on
//! whichever CPUs the scheduler gives them, as a shim and the daemon do;
//! each reads its own CPU time. The CPU both spend per wake (a write, a
//! sleep, being woken, a read) is the floor under each context switch a
//! message costs; a virtual machine whose idle CPUs must be woken by the
//! hypervisor charges several times what bare metal does.

/// Round trips measured (each is two wakes).
pub const ROUNDS: u32 = 20_000;

/// CPU time of the calling thread, in µs.
#[cfg(unix)]
fn thread_cpu_us() -> Option<f64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own and reads nothing else.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    ok.then(|| now.tv_sec as f64 * 1e6 + now.tv_nsec as f64 / 1e3)
}

/// Plays `rounds` round trips on `socket`, serving first if `serve`; the
/// thread's CPU time over them, in µs.
#[cfg(unix)]
fn play(mut socket: std::os::unix::net::UnixStream, rounds: u32, serve: bool) -> Option<f64> {
    use std::io::{Read, Write};
    let mut byte = [0u8; 1];
    let start = thread_cpu_us()?;
    for _ in 0..rounds {
        if serve {
            socket.write_all(&byte).ok()?;
            socket.read_exact(&mut byte).ok()?;
        } else {
            socket.read_exact(&mut byte).ok()?;
            socket.write_all(&byte).ok()?;
        }
    }
    Some(thread_cpu_us()? - start)
}

/// CPU per wake, in µs, over `rounds` round trips; `None` where it cannot
/// be measured.
#[cfg(unix)]
pub fn cpu_per_wake_us(rounds: u32) -> Option<f64> {
    let (a, b) = std::os::unix::net::UnixStream::pair().ok()?;
    let other = std::thread::spawn(move || play(b, rounds, false));
    let mine = play(a, rounds, true);
    let theirs = other.join().ok()?;
    Some((mine? + theirs?) / (2.0 * f64::from(rounds.max(1))))
}

#[cfg(not(unix))]
pub fn cpu_per_wake_us(_rounds: u32) -> Option<f64> {
    None
}
