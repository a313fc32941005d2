//! The ZAP handler (ZeroMQ RFC 27) of a daemon with CURVE keys: one thread that answers
//! libzmq's authentication requests from the allow-lists, logs each refused peer once with its
//! address, and reloads the allow-lists on SIGHUP.
//!
//! libzmq asks the handler bound at `inproc://zeromq.zap.01` in the socket's context about every
//! CURVE handshake on a server socket with a ZAP domain: the request names the domain, the
//! client's IP address and its public key; the answer `200` admits it with the key as its
//! `User-Id` (which `Gate` checks on every message), `400` refuses it.
//! Handshakes that fail before any key is known (a plaintext client, a client using a wrong
//! server key) never reach the handler: the handler also reads each bound socket's monitor events
//! (version 2, which carry the peer's address) to log those.

use crate::auth::{
    AllowList, Domain, SecurityError, CRYPTOGRAPHIC, LOGGED_MAX, MECHANISM_MISMATCH,
};
use crate::keys::PublicKey;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// The endpoint libzmq sends ZAP requests to.
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// How often the handler thread looks at the stop flag and for SIGHUP.
const TICK_MS: i64 = 100;

/// SIGHUPs received by this process (see [`reload_on_sighup`]).
static SIGHUPS: AtomicU64 = AtomicU64::new(0);

/// Makes SIGHUP ask every [`Guard`] of this process to read its allow-lists again, instead of
/// stopping the process. Call after the SIGINT/SIGTERM handler is installed: ctrlc's
/// `termination` feature takes SIGHUP as a stop too, and this takes SIGHUP back from it.
pub fn reload_on_sighup() -> std::io::Result<()> {
    // SAFETY: restoring the default disposition is a plain sigaction call; it removes ctrlc's
    // handler for SIGHUP so that signal-hook does not chain to it.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_DFL);
    }
    // SAFETY: the action only increments an atomic counter, which is async-signal-safe.
    unsafe {
        signal_hook::low_level::register(libc::SIGHUP, || {
            SIGHUPS.fetch_add(1, Ordering::SeqCst);
        })?;
    }
    Ok(())
}

/// A bound socket whose handshakes the handler watches.
struct Monitored {
    events: zmq::Socket,
    domain: Domain,
}

/// A handle to hand bound sockets to the handler thread, which reads their handshake events;
/// see [`Monitors::add`].
#[derive(Clone, Debug)]
pub struct Monitors(mpsc::Sender<Monitored>);

/// Bits of the monitor events the handler reads (libzmq's ZMQ_EVENT_*).
const EVENT_MONITOR_STOPPED: u64 = 0x0400;
const EVENT_HANDSHAKE_FAILED_NO_DETAIL: u64 = 0x0800;
const EVENT_HANDSHAKE_FAILED_PROTOCOL: u64 = 0x2000;
/// ZMQ_PAIR, for the monitor socket libzmq creates.
const PAIR: i32 = 0;

impl Monitors {
    /// Starts the version 2 monitor of `sock` (a CURVE server of `domain`) and hands its event
    /// socket to the handler thread. Call before bind, so that no event is missed.
    pub fn add(
        &self,
        ctx: &zmq::Context,
        sock: &mut zmq::Socket,
        domain: Domain,
    ) -> zmq::Result<()> {
        let ep = crate::inproc::endpoint("handshakes");
        let c_ep = std::ffi::CString::new(ep.clone()).map_err(|_| zmq::Error::EINVAL)?;
        let mask = EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | EVENT_HANDSHAKE_FAILED_PROTOCOL
            | EVENT_MONITOR_STOPPED;
        // SAFETY: `sock` is an open socket and `c_ep` a NUL-terminated string that outlives the
        // call; libzmq copies it.
        let rc = unsafe {
            zmq_sys::zmq_socket_monitor_versioned(sock.as_mut_ptr(), c_ep.as_ptr(), mask, 2, PAIR)
        };
        if rc != 0 {
            // SAFETY: reads the calling thread's libzmq error number.
            return Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }));
        }
        let events = ctx.socket(zmq::PAIR)?;
        events.set_linger(0)?;
        events.connect(&ep)?;
        // A handler that has stopped no longer needs it.
        let _ = self.0.send(Monitored { events, domain });
        Ok(())
    }
}

/// The running ZAP handler of a daemon; dropping it stops the thread.
pub struct Guard {
    lists: Vec<Arc<AllowList>>,
    monitors: Monitors,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Guard {
    /// Binds the ZAP endpoint in `ctx` and starts the handler thread. Fails if it cannot bind
    /// (another handler in this context, or no CURVE in this build).
    pub fn start(ctx: &zmq::Context, lists: Vec<Arc<AllowList>>) -> Result<Guard, SecurityError> {
        crate::keys::require_curve()?;
        let zap = ctx.socket(zmq::REP).map_err(SecurityError::Zap)?;
        zap.set_linger(0).map_err(SecurityError::Zap)?;
        zap.bind(ZAP_ENDPOINT).map_err(SecurityError::Zap)?;
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut handler = Handler {
            zap,
            lists: lists.clone(),
            monitored: Vec::new(),
            incoming: rx,
            refused: HashSet::new(),
            admitted: HashSet::new(),
        };
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("zap".into())
            .spawn(move || handler.run(&thread_stop))
            .map_err(|e| SecurityError::Options(format!("cannot start the ZAP thread: {e}")))?;
        Ok(Guard {
            lists,
            monitors: Monitors(tx),
            stop,
            thread: Some(thread),
        })
    }

    /// The allow-list of `domain`, if this guard serves it.
    pub fn list(&self, domain: Domain) -> Option<Arc<AllowList>> {
        self.lists.iter().find(|l| l.domain() == domain).cloned()
    }

    /// A handle for reading the handshake events of bound sockets.
    pub fn monitors(&self) -> Monitors {
        self.monitors.clone()
    }

    /// What is allowed where, for the start-up log.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .lists
            .iter()
            .map(|l| {
                format!(
                    "{}: {} {} key(s) from {}",
                    l.domain().ports(),
                    l.len(),
                    l.domain().role(),
                    l.source().display()
                )
            })
            .collect();
        parts.join("; ")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the handler thread owns.
struct Handler {
    zap: zmq::Socket,
    lists: Vec<Arc<AllowList>>,
    monitored: Vec<Monitored>,
    incoming: mpsc::Receiver<Monitored>,
    /// (domain, address) pairs already logged as refused.
    refused: HashSet<(Domain, String)>,
    /// (domain, key, address) already logged as admitted.
    admitted: HashSet<(Domain, PublicKey, String)>,
}

impl Handler {
    fn run(&mut self, stop: &AtomicBool) {
        let mut hups = SIGHUPS.load(Ordering::SeqCst);
        while !stop.load(Ordering::SeqCst) {
            let now = SIGHUPS.load(Ordering::SeqCst);
            if now != hups {
                hups = now;
                self.reload();
            }
            self.monitored.extend(self.incoming.try_iter());
            let readable: Vec<bool> = {
                let mut items: Vec<zmq::PollItem> = std::iter::once(&self.zap)
                    .chain(self.monitored.iter().map(|w| &w.events))
                    .map(|s| s.as_poll_item(zmq::POLLIN))
                    .collect();
                match zmq::poll(&mut items, TICK_MS) {
                    Ok(_) => items.iter().map(|i| i.is_readable()).collect(),
                    Err(zmq::Error::EINTR) => continue,
                    Err(e) => {
                        tracing::error!("the ZAP handler cannot poll its sockets: {e}");
                        std::thread::sleep(Duration::from_millis(TICK_MS as u64));
                        continue;
                    }
                }
            };
            if readable[0] {
                while let Ok(request) = self.zap.recv_multipart(zmq::DONTWAIT) {
                    let reply = self.answer(&request);
                    if let Err(e) = self.zap.send_multipart(reply, 0) {
                        tracing::error!("the ZAP handler cannot answer libzmq: {e}");
                    }
                }
            }
            let mut stopped = Vec::new();
            for (i, _) in readable[1..].iter().enumerate().filter(|(_, r)| **r) {
                while let Ok(frames) = self.monitored[i].events.recv_multipart(zmq::DONTWAIT) {
                    if !self.on_event(self.monitored[i].domain, &frames) {
                        stopped.push(i);
                    }
                }
            }
            for i in stopped.into_iter().rev() {
                self.monitored.swap_remove(i);
            }
        }
    }

    /// Reads every allow-list again (SIGHUP); a list that cannot be read keeps its old keys.
    fn reload(&mut self) {
        for list in &self.lists {
            match list.reload() {
                Ok((added, removed)) => tracing::info!(
                    "SIGHUP: reloaded {} {}: {} {} key(s) allowed on {} ({added} added, \
                     {removed} removed)",
                    list.domain().option(),
                    list.source().display(),
                    list.len(),
                    list.domain().role(),
                    list.domain().ports()
                ),
                Err(e) => tracing::error!(
                    "SIGHUP: cannot reload {}: {e}; the {} key(s) allowed before stay in force",
                    list.domain().option(),
                    list.len()
                ),
            }
        }
        self.refused.clear();
        self.admitted.clear();
    }

    /// The reply to one ZAP request (RFC 27): version, request id, status code, status text,
    /// user id, metadata.
    fn answer(&mut self, request: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let reply = |id: &[u8], code: &str, text: &str, user: String| {
            vec![
                b"1.0".to_vec(),
                id.to_vec(),
                code.as_bytes().to_vec(),
                text.as_bytes().to_vec(),
                user.into_bytes(),
                Vec::new(),
            ]
        };
        let [version, id, domain, address, _identity, mechanism, credentials @ ..] = request else {
            tracing::error!("malformed ZAP request of {} frames refused", request.len());
            let id = request.get(1).map_or(&[][..], Vec::as_slice);
            return reply(id, "500", "malformed request", String::new());
        };
        if version.as_slice() != b"1.0" {
            return reply(id, "500", "unsupported ZAP version", String::new());
        }
        let address = String::from_utf8_lossy(address).into_owned();
        let list =
            Domain::from_zap_name(domain).and_then(|d| self.lists.iter().find(|l| l.domain() == d));
        let Some(list) = list else {
            tracing::warn!(
                "refused a handshake from {address} in unknown ZAP domain {:?}",
                String::from_utf8_lossy(domain)
            );
            return reply(id, "400", "unknown domain", String::new());
        };
        let domain = list.domain();
        let key = match (mechanism.as_slice(), credentials) {
            (b"CURVE", [key]) => <[u8; 32]>::try_from(key.as_slice())
                .ok()
                .map(PublicKey::from_bytes),
            _ => None,
        };
        let Some(key) = key else {
            self.refuse(domain, &address, "it does not use CURVE");
            return reply(id, "400", "CURVE required", String::new());
        };
        if list.allows(&key) {
            if self.admitted.len() < LOGGED_MAX
                && self.admitted.insert((domain, key, address.clone()))
            {
                tracing::info!(
                    "admitted {} key {key} from {address} on {}",
                    domain.role(),
                    domain.ports()
                );
            }
            return reply(id, "200", "OK", key.z85());
        }
        let why = format!(
            "its key {key} is not an allowed {} key ({} {})",
            domain.role(),
            domain.option(),
            list.source().display()
        );
        self.refuse(domain, &address, &why);
        reply(id, "400", "key not allowed", String::new())
    }

    /// Logs a refused peer once per address and domain (until the next reload).
    fn refuse(&mut self, domain: Domain, address: &str, why: &str) {
        if self.refused.len() >= LOGGED_MAX {
            return;
        }
        if self.refused.insert((domain, address.to_string())) {
            tracing::warn!(
                "refused a connection from {address} on {}: {why}; further refusals of this \
                 address are not logged",
                domain.ports()
            );
            if self.refused.len() == LOGGED_MAX {
                tracing::warn!(
                    "{LOGGED_MAX} addresses refused: no more refusals are logged until SIGHUP"
                );
            }
        }
    }

    /// Handles one version 2 monitor event of a monitored socket; `false` once the monitor stopped.
    fn on_event(&mut self, domain: Domain, frames: &[Vec<u8>]) -> bool {
        let word = |f: Option<&Vec<u8>>| {
            f.and_then(|f| <[u8; 8]>::try_from(f.as_slice()).ok())
                .map(u64::from_ne_bytes)
        };
        let (Some(event), Some(count)) = (word(frames.first()), word(frames.get(1))) else {
            return true;
        };
        let value = word(frames.get(2)).unwrap_or(0);
        let remote = frames
            .get(2 + count as usize + 1)
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_default();
        let address = peer_ip(&remote);
        match event {
            EVENT_MONITOR_STOPPED => return false,
            EVENT_HANDSHAKE_FAILED_PROTOCOL if value == u64::from(MECHANISM_MISMATCH) => self
                .refuse(
                    domain,
                    &address,
                    "it does not use CURVE (a plaintext client, or one started without keys)",
                ),
            EVENT_HANDSHAKE_FAILED_PROTOCOL if value == u64::from(CRYPTOGRAPHIC) => self.refuse(
                domain,
                &address,
                "its CURVE handshake could not be decrypted (it was given a wrong server key)",
            ),
            EVENT_HANDSHAKE_FAILED_PROTOCOL => self.refuse(
                domain,
                &address,
                &format!("it broke the ZMTP handshake (protocol error {value:#x})"),
            ),
            // Often a plaintext client that saw the server's CURVE greeting and hung up before
            // its own greeting was read.
            EVENT_HANDSHAKE_FAILED_NO_DETAIL => self.refuse(
                domain,
                &address,
                &format!(
                    "it hung up during the handshake ({}): a client that does not use CURVE, or \
                     one given a wrong server key",
                    std::io::Error::from_raw_os_error(value as i32)
                ),
            ),
            _ => {}
        }
        true
    }
}

/// The IP address in a monitor event's `tcp://IP:PORT` (`[IP]` for IPv6).
fn peer_ip(endpoint: &str) -> String {
    let rest = endpoint.strip_prefix("tcp://").unwrap_or(endpoint);
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;
    use crate::security::{ClientAuth, ServerAuth};

    #[test]
    fn peer_addresses() {
        assert_eq!(peer_ip("tcp://10.0.0.7:51234"), "10.0.0.7");
        assert_eq!(peer_ip("tcp://[::1]:9"), "::1");
        assert_eq!(peer_ip(""), "");
    }

    /// A CURVE ROUTER of `domain` guarded by `guard`, on a free loopback port.
    fn server(
        ctx: &zmq::Context,
        guard: &Guard,
        keys: &Arc<KeyPair>,
        domain: Domain,
    ) -> (zmq::Socket, u16) {
        let auth = ServerAuth::Curve {
            keys: keys.clone(),
            domain,
            monitors: guard.monitors(),
        };
        crate::socket::router_with(ctx, "127.0.0.1", 0, &auth).unwrap()
    }

    fn client(ctx: &zmq::Context, port: u16, auth: &ClientAuth) -> zmq::Socket {
        let ep = crate::socket::endpoint("127.0.0.1", port);
        crate::socket::dealer_with(ctx, &ep, auth).unwrap()
    }

    /// Pings through `sock` and waits up to `ms` for the answer `server` gives.
    fn round_trip(sock: &zmq::Socket, server: &zmq::Socket, ms: i64) -> Option<String> {
        let deadline = std::time::Instant::now() + Duration::from_millis(ms as u64);
        while std::time::Instant::now() < deadline {
            if sock.send(&b"ping"[..], zmq::DONTWAIT).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if server.poll(zmq::POLLIN, ms).ok()? == 0 {
            return None;
        }
        let _id = server.recv_msg(0).ok()?;
        let mut body = server.recv_msg(0).ok()?;
        body.gets("User-Id").map(str::to_string)
    }

    #[test]
    fn the_handler_admits_allowed_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = zmq::Context::new();
        let server_keys = Arc::new(KeyPair::generate().unwrap());
        let allowed = Arc::new(KeyPair::generate().unwrap());
        let stranger = Arc::new(KeyPair::generate().unwrap());
        let list_path = dir.path().join("allowed.pub");
        std::fs::write(&list_path, format!("{}\n", allowed.public())).unwrap();
        let list = Arc::new(AllowList::load(Domain::Ingest, &list_path).unwrap());
        let guard = Guard::start(&ctx, vec![list.clone()]).unwrap();
        // A second handler in the same context cannot bind.
        assert!(matches!(
            Guard::start(&ctx, vec![]),
            Err(SecurityError::Zap(_))
        ));
        let (srv, port) = server(&ctx, &guard, &server_keys, Domain::Ingest);

        let good = client(
            &ctx,
            port,
            &ClientAuth::Curve {
                keys: allowed.clone(),
                server: server_keys.public(),
            },
        );
        assert_eq!(round_trip(&good, &srv, 5000), Some(allowed.public().z85()));

        let bad = client(
            &ctx,
            port,
            &ClientAuth::Curve {
                keys: stranger.clone(),
                server: server_keys.public(),
            },
        );
        assert_eq!(
            round_trip(&bad, &srv, 300),
            None,
            "an unknown key gets nothing"
        );
        let plain = client(&ctx, port, &ClientAuth::Plain);
        assert_eq!(
            round_trip(&plain, &srv, 300),
            None,
            "a plaintext client gets nothing"
        );

        // The stranger is allowed after a reload, without a new socket.
        std::fs::write(
            &list_path,
            format!("{}\n{}\n", allowed.public(), stranger.public()),
        )
        .unwrap();
        list.reload().unwrap();
        let late = client(
            &ctx,
            port,
            &ClientAuth::Curve {
                keys: stranger.clone(),
                server: server_keys.public(),
            },
        );
        assert_eq!(round_trip(&late, &srv, 5000), Some(stranger.public().z85()));
        drop(guard);
    }
}
