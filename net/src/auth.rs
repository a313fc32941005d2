//! The vocabulary of who may talk to whom, shared by the sockets, the ZAP handler and the
//! daemons' set-up (`security`): the role of a bound socket ([`Domain`]), its allow-list, the
//! check of each message's sender ([`Gate`]), how a socket authenticates ([`ServerAuth`],
//! [`ClientAuth`]), and why a handshake failed ([`HandshakeProbe`]).

use crate::keys::{self, KeyError, KeyPair, PublicKey};
use schema::codec::Inbound;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// The role a bound socket serves: the keys it admits and the ZAP domain they are checked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    /// The storage node's five ports: broker keys.
    Storage,
    /// The broker's ingest port: watcher keys.
    Ingest,
    /// The broker's fetch port: fetcher keys (read only).
    Fetch,
}

impl Domain {
    /// The ZAP domain of the sockets of this role.
    pub fn zap_name(self) -> &'static str {
        match self {
            Domain::Storage => "dfs-storage",
            Domain::Ingest => "dfs-ingest",
            Domain::Fetch => "dfs-fetch",
        }
    }

    /// The domain called `name` in ZAP requests.
    pub fn from_zap_name(name: &[u8]) -> Option<Domain> {
        [Domain::Storage, Domain::Ingest, Domain::Fetch]
            .into_iter()
            .find(|d| d.zap_name().as_bytes() == name)
    }

    /// The sockets, for logs.
    pub fn ports(self) -> &'static str {
        match self {
            Domain::Storage => "the storage node's ports",
            Domain::Ingest => "the ingest port",
            Domain::Fetch => "the fetch port",
        }
    }

    /// The role of the keys admitted.
    pub fn role(self) -> &'static str {
        match self {
            Domain::Storage => "broker",
            Domain::Ingest => "watcher",
            Domain::Fetch => "fetcher",
        }
    }

    /// The daemon option that names the allow-list.
    pub fn option(self) -> &'static str {
        match self {
            Domain::Storage => "--allow",
            Domain::Ingest => "--allow-watchers",
            Domain::Fetch => "--allow-fetchers",
        }
    }
}

/// The public keys one role's sockets admit, read from a file or folder and read again on
/// [`AllowList::reload`].
#[derive(Debug)]
pub struct AllowList {
    domain: Domain,
    source: PathBuf,
    /// Each key, with the volumes it may claim (`None`: any).
    keys: RwLock<keys::AllowedKeys>,
    /// Keys whose messages were dropped, so each is logged once.
    dropped: Mutex<HashSet<String>>,
}

/// Most refused keys or addresses remembered for "logged once"; beyond it, no more are logged.
pub(crate) const LOGGED_MAX: usize = 4096;

impl AllowList {
    /// Reads the allow-list of `domain` from `source` (a file of keys or a folder of `*.pub`).
    pub fn load(domain: Domain, source: &Path) -> Result<AllowList, KeyError> {
        let keys = read_for(domain, source)?;
        if keys.is_empty() {
            tracing::warn!(
                "{} {} holds no key: no {} can connect to {}",
                domain.option(),
                source.display(),
                domain.role(),
                domain.ports()
            );
        }
        Ok(AllowList {
            domain,
            source: source.to_path_buf(),
            keys: RwLock::new(keys),
            dropped: Mutex::new(HashSet::new()),
        })
    }

    /// The role these keys serve.
    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// Where the keys are read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// How many keys are allowed now.
    pub fn len(&self) -> usize {
        self.keys.read().map_or(0, |k| k.len())
    }

    /// Whether no key is allowed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` is allowed now.
    pub fn allows(&self, key: &PublicKey) -> bool {
        self.keys.read().is_ok_and(|k| k.contains_key(key))
    }

    /// The volumes `key` may claim (`/` for the root volume), or `None` when any.
    pub fn volumes_of(&self, key: &PublicKey) -> Option<std::collections::BTreeSet<String>> {
        self.keys
            .read()
            .ok()
            .and_then(|k| k.get(key).cloned().flatten())
    }

    /// Reads the source again and, if it is valid, replaces the keys; returns the keys added
    /// and removed. On error the old keys stay in force.
    pub fn reload(&self) -> Result<(usize, usize), KeyError> {
        let new = read_for(self.domain, &self.source)?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let added = new.keys().filter(|k| !keys.contains_key(k)).count();
        let removed = keys.keys().filter(|k| !new.contains_key(k)).count();
        *keys = new;
        if let Ok(mut d) = self.dropped.lock() {
            d.clear();
        }
        Ok((added, removed))
    }
}

/// Reads the allow-list of `domain` at `source`; a `volumes=` restriction is for watcher keys
/// only.
fn read_for(domain: Domain, source: &Path) -> Result<keys::AllowedKeys, KeyError> {
    let keys = keys::read_allow_list(source)?;
    if domain != Domain::Ingest && keys.values().any(Option::is_some) {
        return Err(KeyError::Bad {
            path: source.to_path_buf(),
            line: 0,
            why: format!(
                "volumes= restricts watcher keys (--allow-watchers); {} keys take none",
                domain.option()
            ),
        });
    }
    Ok(keys)
}

/// The sender check of one bound socket: everyone on a plaintext socket, else only messages whose
/// connection's `User-Id` (the client key the ZAP handler admitted) is allowed now.
#[derive(Debug, Clone, Default)]
pub struct Gate(Option<Arc<AllowList>>);

impl Gate {
    /// The gate of a plaintext socket: it admits every message.
    pub fn open() -> Gate {
        Gate(None)
    }

    /// The gate of a socket whose senders must be in `list` (none: a plaintext socket).
    pub(crate) fn of(list: Option<Arc<AllowList>>) -> Gate {
        Gate(list)
    }

    /// Whether the connection admitted with the key `user_id` (Z85) may claim `volume` (its
    /// name; empty for the root volume): always on a plaintext socket and for a key without a
    /// `volumes=` restriction; otherwise the one line saying why not.
    pub fn may_claim(&self, user_id: &str, volume: &str) -> Result<(), String> {
        let Some(list) = &self.0 else { return Ok(()) };
        let Some(key) = PublicKey::from_z85(user_id) else {
            return Ok(());
        };
        let Some(allowed) = list.volumes_of(&key) else {
            return Ok(());
        };
        let wanted = if volume.is_empty() {
            keys::ROOT_VOLUME
        } else {
            volume
        };
        if allowed.contains(wanted) {
            return Ok(());
        }
        let names: Vec<&str> = allowed
            .iter()
            .map(|v| {
                if v == keys::ROOT_VOLUME {
                    "the root volume"
                } else {
                    v
                }
            })
            .collect();
        Err(format!(
            "key {user_id} may claim only {} ({} {})",
            names.join(", "),
            list.domain.option(),
            list.source.display()
        ))
    }

    /// Whether `inbound` may be handled. A refused message is dropped unanswered; the first
    /// message of each refused key is logged.
    pub fn admits(&self, inbound: &Inbound) -> bool {
        let Some(list) = &self.0 else {
            return true;
        };
        let user = inbound.user_id.as_deref().unwrap_or("");
        if PublicKey::from_z85(user).is_some_and(|k| list.allows(&k)) {
            return true;
        }
        let first = list
            .dropped
            .lock()
            .is_ok_and(|mut d| d.len() < LOGGED_MAX && d.insert(user.to_string()));
        if first {
            tracing::warn!(
                "dropped a message on {} from key {}: it is not (or no longer) an allowed {} key \
                 ({} {}); further messages of this key are dropped silently",
                list.domain.ports(),
                if user.is_empty() { "(none)" } else { user },
                list.domain.role(),
                list.domain.option(),
                list.source.display()
            );
        }
        false
    }
}

/// How a connecting socket proves who it is.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// No authentication, no encryption.
    Plain,
    /// CURVE client with this key pair, to the server whose public key is `server`.
    Curve {
        keys: Arc<KeyPair>,
        server: PublicKey,
    },
}

impl ClientAuth {
    /// Sets the CURVE options on `sock`. Call before connect.
    pub fn apply(&self, sock: &zmq::Socket) -> zmq::Result<()> {
        if let ClientAuth::Curve { keys, server } = self {
            sock.set_curve_serverkey(server.as_bytes())?;
            sock.set_curve_publickey(keys.public().as_bytes())?;
            sock.set_curve_secretkey(keys.secret())?;
        }
        Ok(())
    }

    /// Whether CURVE is used.
    pub fn is_curve(&self) -> bool {
        matches!(self, ClientAuth::Curve { .. })
    }
}

/// Why a daemon or client cannot set up its security.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(
        "refusing to {what} without CURVE keys: anyone who can reach it could {risk}. Make keys \
         with `dfs keygen --out DIR` and pass {fix} (README: Security), or pass --insecure to \
         run without authentication or encryption"
    )]
    Plaintext {
        what: String,
        risk: &'static str,
        fix: String,
    },
    #[error("{0}")]
    Options(String),
    #[error(
        "cannot start the ZAP handler on inproc://zeromq.zap.01 ({0}); without it no client could \
         be authenticated"
    )]
    Zap(zmq::Error),
    #[error("cannot set up CURVE on a socket: {0}")]
    Socket(zmq::Error),
}

/// Whether `host` is this machine's loopback interface: `localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Watches the handshakes of a connecting socket, so a client that gets no connection can say
/// whether the peer was silent or refused it (wrong server key, key not allowed, no CURVE).
pub struct HandshakeProbe {
    events: crate::inproc::Monitor,
    last_failure: Option<String>,
    /// Whether the socket's peer is connected now: a handshake succeeded and no disconnect
    /// came since (unknown, `None`, until the first of either).
    connected: Option<bool>,
}

impl HandshakeProbe {
    /// Starts watching `sock` for refused handshakes. Call before connect.
    pub fn attach(ctx: &zmq::Context, sock: &zmq::Socket) -> zmq::Result<HandshakeProbe> {
        HandshakeProbe::watching(ctx, sock, HANDSHAKE_FAILURES)
    }

    /// Starts watching `sock` for refused handshakes and for its connection coming and going
    /// ([`HandshakeProbe::connected`]). Call before connect. The probe must then be read
    /// regularly for as long as the socket lives: libzmq blocks the socket's I/O when the
    /// events pile up unread.
    pub fn attach_with_connection(
        ctx: &zmq::Context,
        sock: &zmq::Socket,
    ) -> zmq::Result<HandshakeProbe> {
        let events = HANDSHAKE_FAILURES
            | zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32
            | zmq::SocketEvent::DISCONNECTED as i32;
        HandshakeProbe::watching(ctx, sock, events)
    }

    fn watching(ctx: &zmq::Context, sock: &zmq::Socket, events: i32) -> zmq::Result<Self> {
        Ok(HandshakeProbe {
            events: crate::inproc::Monitor::attach(ctx, sock, events)?,
            last_failure: None,
            connected: None,
        })
    }

    /// Whether the peer is connected, as far as the events read so far tell (`None`: no
    /// handshake nor disconnect seen yet).
    pub fn connected(&mut self) -> Option<bool> {
        self.take_failure();
        self.connected
    }

    /// Why the last handshake failed, if one ever did: one clause for an error message.
    pub fn failure(&mut self) -> Option<String> {
        self.take_failure();
        self.last_failure.clone()
    }

    /// Why a handshake failed since the last call, if one did. libzmq does not reconnect
    /// after a refused handshake (a protocol error), so a long-lived client reconnects itself
    /// (`net::socket::reconnect`) when this says so.
    pub fn take_failure(&mut self) -> Option<String> {
        let mut fresh = None;
        while let Some(e) = self.events.next() {
            if e.is(zmq::SocketEvent::HANDSHAKE_SUCCEEDED) {
                self.connected = Some(true);
            } else if e.is(zmq::SocketEvent::DISCONNECTED) {
                self.connected = Some(false);
            }
            if let Some(why) = handshake_failure(e.event, e.value) {
                self.last_failure = Some(why.clone());
                fresh = Some(why);
            }
        }
        fresh
    }
}

/// ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: one side uses CURVE, the other not.
pub(crate) const MECHANISM_MISMATCH: u32 = 0x1100_0002;
/// ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: a CURVE box did not open (wrong key).
pub(crate) const CRYPTOGRAPHIC: u32 = 0x1100_0001;

/// Why a client's handshake failed, from a version 1 monitor event (`None` for other events):
/// one clause naming the likely cause.
pub fn handshake_failure(event: u16, value: u32) -> Option<String> {
    use zmq::SocketEvent as E;
    let why = if event == E::HANDSHAKE_FAILED_AUTH.to_raw() {
        format!(
            "it refused this side's key (ZAP status {value}): the key is not in its allow-list \
             for this port"
        )
    } else if event == E::HANDSHAKE_FAILED_PROTOCOL.to_raw() && value == MECHANISM_MISMATCH {
        "the security handshake failed: one side uses CURVE keys and the other does not \
         (--secret-key with the server's public key on this side, keys or --insecure there)"
            .to_string()
    } else if event == E::HANDSHAKE_FAILED_PROTOCOL.to_raw() {
        format!("the CURVE handshake failed (protocol error {value:#x}): is the server key right?")
    } else if event == E::HANDSHAKE_FAILED_NO_DETAIL.to_raw() {
        "it closed the connection during the CURVE handshake: the server key given here is \
         probably not its public key"
            .to_string()
    } else {
        return None;
    };
    Some(why)
}

/// The version 1 monitor events [`handshake_failure`] reads.
pub const HANDSHAKE_FAILURES: i32 = zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32;
