//! Ports for the daemons under test, chosen so that a daemon restarted on the ports it had finds
//! them free.
//!
//! A port the kernel picks for a bind to port 0 lies in its ephemeral range, the same range it
//! draws the source port of every outgoing connection from. Once a killed daemon's port is free,
//! any connection another test opens (to Garage, to a broker) may take it as its source port,
//! and the restarted daemon cannot bind it. So these ports come from below the ephemeral range,
//! where the kernel never hands out a port by itself, and each run is handed out once per test
//! process.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The ports handed out: a range outside the kernel's ephemeral one, and the next offset in it.
struct Pool {
    first: u32,
    len: u32,
    next: AtomicU32,
}

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| {
                let mut it = s.split_whitespace().map(|p| p.parse::<u32>().ok());
                Some((it.next()??, it.next()??))
            })
            .unwrap_or((32768, 60999));
        let (first, len) = if low >= 10_000 + 1024 {
            (low - 10_000, 10_000)
        } else if high + 10_000 <= 65_535 {
            (high + 1, 10_000)
        } else {
            return None;
        };
        // Test processes that run at once (nextest) start at different places.
        let start = (std::process::id() * 7919) % len;
        Some(Pool {
            first,
            len,
            next: AtomicU32::new(start),
        })
    })
    .as_ref()
}

/// The first of `n` consecutive loopback ports that are free now and were not handed out before
/// by this process. Without room outside the ephemeral range, 0: the daemon picks its own.
pub fn free_run(n: u16) -> u16 {
    let Some(p) = pool() else {
        return 0;
    };
    let n = u32::from(n);
    for _ in 0..p.len {
        let at = p.next.fetch_add(n, Ordering::Relaxed) % p.len;
        if at + n > p.len {
            continue;
        }
        let base = p.first + at;
        let all_free =
            (base..base + n).all(|port| TcpListener::bind(("127.0.0.1", port as u16)).is_ok());
        if all_free {
            return base as u16;
        }
    }
    panic!("no run of {n} free loopback ports below the ephemeral range");
}

/// `base`, or when it is 0 (the daemon's "pick one"), a free run of `n` from [`free_run`].
pub fn or_free_run(base: u16, n: u16) -> u16 {
    match base {
        0 => free_run(n),
        base => base,
    }
}

/// One free loopback port outside the ephemeral range (see [`free_run`]), else one the kernel
/// picks.
pub fn free_port() -> u16 {
    match free_run(1) {
        0 => TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port"),
        port => port,
    }
}
