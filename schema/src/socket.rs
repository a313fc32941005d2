//! How every role opens its sockets: bound ROUTERs with the protocol's limits, connecting
//! DEALERs that fail fast while their peer is away.

use crate::limits::MAX_FRAME;
use std::fmt;

/// A socket that could not be opened, with the address and the reason.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {endpoint}: {source}")]
pub struct SocketError {
    pub action: &'static str,
    pub endpoint: String,
    pub source: zmq::Error,
}

fn err<'a>(action: &'static str, endpoint: &'a str) -> impl FnOnce(zmq::Error) -> SocketError + 'a {
    move |source| SocketError {
        action,
        endpoint: endpoint.to_string(),
        source,
    }
}

/// `tcp://host:port`, with IPv6 hosts in brackets.
pub fn endpoint(host: &str, port: impl fmt::Display) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("tcp://[{host}]:{port}")
    } else {
        format!("tcp://{host}:{port}")
    }
}

/// Queue limits (messages) on every socket. Flow control keeps real queues far below them.
const HWM: i32 = 10_000;

/// Binds a ROUTER on `host:port` (`port` 0 picks a free port) and returns it with the port it
/// bound. Sets ROUTER_MANDATORY (unroutable replies are errors, not silent drops),
/// ZMQ_MAXMSGSIZE and zero linger.
pub fn router(
    ctx: &zmq::Context,
    host: &str,
    port: u16,
) -> Result<(zmq::Socket, u16), SocketError> {
    let ep = endpoint(
        host,
        if port == 0 {
            "*".to_string()
        } else {
            port.to_string()
        },
    );
    let sock = ctx
        .socket(zmq::ROUTER)
        .map_err(err("create a socket for", &ep))?;
    sock.set_router_mandatory(true)
        .map_err(err("configure", &ep))?;
    sock.set_maxmsgsize(MAX_FRAME)
        .map_err(err("configure", &ep))?;
    sock.set_linger(0).map_err(err("configure", &ep))?;
    sock.set_sndhwm(HWM).map_err(err("configure", &ep))?;
    sock.set_rcvhwm(HWM).map_err(err("configure", &ep))?;
    if host.contains(':') {
        sock.set_ipv6(true).map_err(err("configure", &ep))?;
    }
    sock.bind(&ep).map_err(err("bind", &ep))?;
    let bound = bound_port(&sock).map_err(err("read the port of", &ep))?;
    Ok((sock, bound))
}

/// Binds `n` ROUTERs on consecutive ports `base..base+n`. With `base` 0 it looks for a free
/// run of `n` ports and returns the first.
pub fn routers_consecutive(
    ctx: &zmq::Context,
    host: &str,
    base: u16,
    n: u16,
) -> Result<(Vec<zmq::Socket>, u16), SocketError> {
    if base != 0 {
        let socks = (0..n)
            .map(|i| router(ctx, host, base + i).map(|(s, _)| s))
            .collect::<Result<_, _>>()?;
        return Ok((socks, base));
    }
    let mut last = None;
    for _ in 0..64 {
        let (first, p) = router(ctx, host, 0)?;
        if p.checked_add(n).is_none() {
            continue;
        }
        let mut socks = vec![first];
        for i in 1..n {
            match router(ctx, host, p + i) {
                Ok((s, _)) => socks.push(s),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        if socks.len() == n as usize {
            return Ok((socks, p));
        }
    }
    Err(last.unwrap_or(SocketError {
        action: "find free consecutive ports on",
        endpoint: endpoint(host, "*"),
        source: zmq::Error::EADDRINUSE,
    }))
}

/// A DEALER connected to `ep`. With ZMQ_IMMEDIATE a send while the peer is away fails at once
/// (EAGAIN) instead of queueing; reconnects back off from 100 ms to 2 s.
pub fn dealer(ctx: &zmq::Context, ep: &str) -> Result<zmq::Socket, SocketError> {
    let sock = ctx
        .socket(zmq::DEALER)
        .map_err(err("create a socket for", ep))?;
    sock.set_immediate(true).map_err(err("configure", ep))?;
    sock.set_linger(0).map_err(err("configure", ep))?;
    sock.set_maxmsgsize(MAX_FRAME)
        .map_err(err("configure", ep))?;
    sock.set_sndhwm(HWM).map_err(err("configure", ep))?;
    sock.set_rcvhwm(HWM).map_err(err("configure", ep))?;
    sock.set_reconnect_ivl(100).map_err(err("configure", ep))?;
    sock.set_reconnect_ivl_max(2000)
        .map_err(err("configure", ep))?;
    if ep.contains('[') {
        sock.set_ipv6(true).map_err(err("configure", ep))?;
    }
    sock.connect(ep).map_err(err("connect to", ep))?;
    Ok(sock)
}

/// The TCP port a bound socket listens on.
pub fn bound_port(sock: &zmq::Socket) -> zmq::Result<u16> {
    let ep = sock.get_last_endpoint()?.map_err(|_| zmq::Error::EINVAL)?;
    ep.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or(zmq::Error::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_port_zero_and_consecutive_runs() {
        let ctx = zmq::Context::new();
        let (_s, p) = router(&ctx, "127.0.0.1", 0).unwrap();
        assert_ne!(p, 0);
        let (socks, base) = routers_consecutive(&ctx, "127.0.0.1", 0, 5).unwrap();
        assert_eq!(socks.len(), 5);
        assert_eq!(bound_port(&socks[4]).unwrap(), base + 4);
    }

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("127.0.0.1", 9000), "tcp://127.0.0.1:9000");
        assert_eq!(endpoint("::1", 9000), "tcp://[::1]:9000");
    }
}
