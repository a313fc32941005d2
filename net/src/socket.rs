//! How every role opens its sockets: bound ROUTERs with the protocol's limits, connecting
//! DEALERs that fail fast while their peer is away.

use crate::auth::{ClientAuth, HandshakeProbe};
use crate::security::ServerAuth;
use schema::limits::MAX_FRAME;
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

/// Messages a bound ROUTER queues from one peer before it stops reading that peer's connection
/// (TCP then holds the sender back; nothing is dropped). Credit keeps a well-behaved peer's
/// messages in flight far below the send queues, and the receiving loop drains its sockets
/// every turn, so this is only reached by a peer that floods: it bounds the memory one
/// connection can pin to this many messages (at most `MAX_FRAME` bytes each), instead of
/// [`HWM`] of them.
pub const ROUTER_RCVHWM: i32 = 64;

/// I/O threads of every daemon's context. CURVE encrypts in the I/O threads and each connection
/// stays on one of them, so with two the broker's inbound and outbound streams are ciphered on
/// two cores (README, Performance: on the two-core bench machine, where all three daemons share
/// the cores, 1, 2 and 4 measured the same within the noise).
pub const IO_THREADS: i32 = 2;

/// A ZeroMQ context with [`IO_THREADS`] I/O threads.
pub fn context() -> zmq::Context {
    let ctx = zmq::Context::new();
    if let Err(e) = ctx.set_io_threads(IO_THREADS) {
        tracing::debug!("cannot set {IO_THREADS} ZeroMQ I/O threads: {e}");
    }
    ctx
}

/// Binds a plaintext ROUTER on `host:port`; see [`router_with`].
pub fn router(
    ctx: &zmq::Context,
    host: &str,
    port: u16,
) -> Result<(zmq::Socket, u16), SocketError> {
    router_with(ctx, host, port, &ServerAuth::Plain)
}

/// Binds a ROUTER on `host:port` (`port` 0 picks a free port) with the security `auth` and
/// returns it with the port it bound. Sets ROUTER_MANDATORY (unroutable replies are errors, not
/// silent drops), ZMQ_MAXMSGSIZE and zero linger.
pub fn router_with(
    ctx: &zmq::Context,
    host: &str,
    port: u16,
    auth: &ServerAuth,
) -> Result<(zmq::Socket, u16), SocketError> {
    let ep = endpoint(
        host,
        if port == 0 {
            "*".to_string()
        } else {
            port.to_string()
        },
    );
    let mut sock = ctx
        .socket(zmq::ROUTER)
        .map_err(err("create a socket for", &ep))?;
    sock.set_router_mandatory(true)
        .map_err(err("configure", &ep))?;
    sock.set_maxmsgsize(MAX_FRAME)
        .map_err(err("configure", &ep))?;
    sock.set_linger(0).map_err(err("configure", &ep))?;
    sock.set_sndhwm(HWM).map_err(err("configure", &ep))?;
    sock.set_rcvhwm(ROUTER_RCVHWM)
        .map_err(err("configure", &ep))?;
    if host.contains(':') {
        sock.set_ipv6(true).map_err(err("configure", &ep))?;
    }
    auth.apply(ctx, &mut sock)
        .map_err(err("set up CURVE for", &ep))?;
    sock.bind(&ep).map_err(err("bind", &ep))?;
    let bound = bound_port(&sock).map_err(err("read the port of", &ep))?;
    Ok((sock, bound))
}

/// Binds `n` plaintext ROUTERs on consecutive ports; see [`routers_consecutive_with`].
pub fn routers_consecutive(
    ctx: &zmq::Context,
    host: &str,
    base: u16,
    n: u16,
) -> Result<(Vec<zmq::Socket>, u16), SocketError> {
    routers_consecutive_with(ctx, host, base, n, &ServerAuth::Plain)
}

/// Binds `n` ROUTERs with the security `auth` on consecutive ports `base..base+n`. With `base`
/// 0 it looks for a free run of `n` ports and returns the first.
pub fn routers_consecutive_with(
    ctx: &zmq::Context,
    host: &str,
    base: u16,
    n: u16,
    auth: &ServerAuth,
) -> Result<(Vec<zmq::Socket>, u16), SocketError> {
    if base != 0 {
        let socks = (0..n)
            .map(|i| router_with(ctx, host, base + i, auth).map(|(s, _)| s))
            .collect::<Result<_, _>>()?;
        return Ok((socks, base));
    }
    let mut last = None;
    for _ in 0..64 {
        let (first, p) = router_with(ctx, host, 0, auth)?;
        if p.checked_add(n).is_none() {
            continue;
        }
        let mut socks = vec![first];
        for i in 1..n {
            match router_with(ctx, host, p + i, auth) {
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

/// A plaintext DEALER connected to `ep`; see [`dealer_with`].
pub fn dealer(ctx: &zmq::Context, ep: &str) -> Result<zmq::Socket, SocketError> {
    dealer_with(ctx, ep, &ClientAuth::Plain)
}

/// A DEALER with the security `auth` connected to `ep`. With ZMQ_IMMEDIATE a send while the
/// peer is away fails at once (EAGAIN) instead of queueing; reconnects back off from 100 ms to
/// 2 s.
pub fn dealer_with(
    ctx: &zmq::Context,
    ep: &str,
    auth: &ClientAuth,
) -> Result<zmq::Socket, SocketError> {
    let sock = dealer_unconnected(ctx, ep, auth)?;
    sock.connect(ep).map_err(err("connect to", ep))?;
    Ok(sock)
}

/// Like [`dealer_with`], with a [`HandshakeProbe`] that tells why no connection came up.
pub fn dealer_probed(
    ctx: &zmq::Context,
    ep: &str,
    auth: &ClientAuth,
) -> Result<(zmq::Socket, HandshakeProbe), SocketError> {
    let sock = dealer_unconnected(ctx, ep, auth)?;
    let probe = HandshakeProbe::attach(ctx, &sock).map_err(err("watch the handshakes of", ep))?;
    sock.connect(ep).map_err(err("connect to", ep))?;
    Ok((sock, probe))
}

/// [`dealer_probed`] whose probe also follows the connection coming and going
/// (`HandshakeProbe::connected`); the caller reads the probe for as long as the socket lives.
pub fn dealer_watched(
    ctx: &zmq::Context,
    ep: &str,
    auth: &ClientAuth,
) -> Result<(zmq::Socket, HandshakeProbe), SocketError> {
    let sock = dealer_unconnected(ctx, ep, auth)?;
    let probe = HandshakeProbe::attach_with_connection(ctx, &sock)
        .map_err(err("watch the connection of", ep))?;
    sock.connect(ep).map_err(err("connect to", ep))?;
    Ok((sock, probe))
}

/// A configured DEALER for `ep`, not yet connected.
fn dealer_unconnected(
    ctx: &zmq::Context,
    ep: &str,
    auth: &ClientAuth,
) -> Result<zmq::Socket, SocketError> {
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
    auth.apply(&sock).map_err(err("set up CURVE for", ep))?;
    Ok(sock)
}

/// Connects `sock` to `ep` afresh. libzmq gives up on an endpoint whose handshake was refused
/// (wrong key, key not allowed): a long-lived client calls this to try again, for example after
/// the server reloaded its allow-list.
pub fn reconnect(sock: &zmq::Socket, ep: &str) -> Result<(), SocketError> {
    // The old connection may be gone already (ENOENT): only the new one matters.
    let _ = sock.disconnect(ep);
    sock.connect(ep).map_err(err("connect to", ep))
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
