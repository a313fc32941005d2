//! Who may talk to whom: CURVE (RFC 26) on the sockets of every link that leaves the machine,
//! the allow-list of each bound socket's role, the check of every message's sender key, and the
//! rule that nothing listens or connects beyond loopback without keys unless told `--insecure`.
//!
//! A daemon with a secret key starts a [`Guard`] (the ZAP handler, RFC 27)
//! before it binds anything: each bound socket is a CURVE server in the ZAP domain of its role
//! ([`Domain`]) with ZMQ_ZAP_ENFORCE_DOMAIN, so a handshake is admitted only when the handler
//! finds the client's key in that role's [`AllowList`], and never when the handler is gone.
//! [`Gate`] checks the `User-Id` the handler gave each connection on every message as well, so a
//! key removed from an allow-list by a reload (SIGHUP) is refused even on a connection that was
//! admitted before.

use crate::keys::{self, KeyError, KeyPair, PublicKey};
use crate::zap::{Guard, Monitors};
use schema::codec::Inbound;
use std::collections::{BTreeSet, HashSet};
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
    keys: RwLock<BTreeSet<PublicKey>>,
    /// Keys whose messages were dropped, so each is logged once.
    dropped: Mutex<HashSet<String>>,
}

/// Most refused keys or addresses remembered for "logged once"; beyond it, no more are logged.
pub(crate) const LOGGED_MAX: usize = 4096;

impl AllowList {
    /// Reads the allow-list of `domain` from `source` (a file of keys or a folder of `*.pub`).
    pub fn load(domain: Domain, source: &Path) -> Result<AllowList, KeyError> {
        let keys = keys::read_allow_list(source)?;
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
        self.keys.read().is_ok_and(|k| k.contains(key))
    }

    /// Reads the source again and, if it is valid, replaces the keys; returns the keys added
    /// and removed. On error the old keys stay in force.
    pub fn reload(&self) -> Result<(usize, usize), KeyError> {
        let new = keys::read_allow_list(&self.source)?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let added = new.difference(&keys).count();
        let removed = keys.difference(&new).count();
        *keys = new;
        if let Ok(mut d) = self.dropped.lock() {
            d.clear();
        }
        Ok((added, removed))
    }
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

/// How a bound socket authenticates the peers that connect to it.
#[derive(Clone, Debug)]
pub enum ServerAuth {
    /// No authentication, no encryption (loopback, or `--insecure`).
    Plain,
    /// CURVE server with this key pair in the ZAP domain of `domain`; refused handshakes are
    /// reported to the guard through `monitors` (for the log, with the peer's address).
    Curve {
        keys: Arc<KeyPair>,
        domain: Domain,
        monitors: Monitors,
    },
}

/// ZMQ_ZAP_ENFORCE_DOMAIN (libzmq 4.3): with it a CURVE server refuses every handshake when no
/// ZAP handler answers, instead of admitting any client that knows the server key.
const ZMQ_ZAP_ENFORCE_DOMAIN: i32 = 93;

impl ServerAuth {
    /// Sets the CURVE options on `sock` and starts watching its handshakes. Call before bind.
    pub fn apply(&self, ctx: &zmq::Context, sock: &mut zmq::Socket) -> zmq::Result<()> {
        let ServerAuth::Curve {
            keys,
            domain,
            monitors,
        } = self
        else {
            return Ok(());
        };
        sock.set_curve_server(true)?;
        sock.set_curve_secretkey(keys.secret())?;
        sock.set_zap_domain(domain.zap_name())?;
        let on: i32 = 1;
        // SAFETY: `sock` is an open socket; libzmq reads an int of the given size.
        let rc = unsafe {
            zmq_sys::zmq_setsockopt(
                sock.as_mut_ptr(),
                ZMQ_ZAP_ENFORCE_DOMAIN,
                (&on as *const i32).cast(),
                std::mem::size_of::<i32>(),
            )
        };
        if rc != 0 {
            // SAFETY: reads the calling thread's libzmq error number.
            return Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }));
        }
        monitors.add(ctx, sock, *domain)
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

/// The security options of a daemon's bound ports.
pub struct ServerOptions<'a> {
    /// Where it listens (`--bind`).
    pub bind: &'a str,
    /// `--secret-key`.
    pub secret_key: Option<&'a Path>,
    /// The allow-list option of each role it serves.
    pub allow: Vec<(Domain, Option<&'a Path>)>,
    /// `--insecure`.
    pub insecure: bool,
}

/// The security of a daemon's bound ports: plaintext, or CURVE with its key pair and a running
/// ZAP handler. Dropping it stops the handler (after the sockets, so no handshake slips through).
pub struct ServerSecurity {
    keys: Option<Arc<KeyPair>>,
    guard: Option<Guard>,
}

impl ServerSecurity {
    /// Plaintext: every socket open to all (loopback use, `dfs up`).
    pub fn plain() -> ServerSecurity {
        ServerSecurity {
            keys: None,
            guard: None,
        }
    }

    /// Checks the options; with a secret key, reads it and every allow-list and starts the ZAP
    /// handler in `ctx` (before any socket of `ctx` binds). Without one, refuses a bind address
    /// beyond loopback unless `insecure`.
    pub fn start(ctx: &zmq::Context, opts: ServerOptions) -> Result<ServerSecurity, SecurityError> {
        let Some(secret) = opts.secret_key else {
            if let Some((d, _)) = opts.allow.iter().find(|(_, p)| p.is_some()) {
                return Err(SecurityError::Options(format!(
                    "{} needs --secret-key: the allow-list is checked only on CURVE sockets",
                    d.option()
                )));
            }
            if !opts.insecure && !is_loopback(opts.bind) {
                let allow: Vec<&str> = opts.allow.iter().map(|(d, _)| d.option()).collect();
                return Err(SecurityError::Plaintext {
                    what: format!("listen on {}", opts.bind),
                    risk: "read, write or delete every file",
                    fix: format!("--secret-key and {}", allow.join(" and ")),
                });
            }
            if opts.insecure && !is_loopback(opts.bind) {
                tracing::warn!(
                    "--insecure: listening on {} without authentication or encryption",
                    opts.bind
                );
            }
            return Ok(ServerSecurity::plain());
        };
        if opts.insecure {
            return Err(SecurityError::Options(
                "--insecure and --secret-key contradict each other: choose one".into(),
            ));
        }
        let keys = Arc::new(keys::read_secret_key(secret)?);
        let mut lists = Vec::new();
        for (domain, path) in &opts.allow {
            let Some(path) = path else {
                return Err(SecurityError::Options(format!(
                    "{} FILE|DIR is required with --secret-key: the public keys of the {}s \
                     allowed on {}",
                    domain.option(),
                    domain.role(),
                    domain.ports()
                )));
            };
            lists.push(Arc::new(AllowList::load(*domain, path)?));
        }
        let guard = Guard::start(ctx, lists)?;
        tracing::info!(
            "CURVE on: this daemon's public key is {}; allowed on {}",
            keys.public(),
            guard.describe()
        );
        Ok(ServerSecurity {
            keys: Some(keys),
            guard: Some(guard),
        })
    }

    /// The authentication of the sockets serving `domain`.
    pub fn auth(&self, domain: Domain) -> ServerAuth {
        match (&self.keys, &self.guard) {
            (Some(keys), Some(guard)) => ServerAuth::Curve {
                keys: keys.clone(),
                domain,
                monitors: guard.monitors(),
            },
            _ => ServerAuth::Plain,
        }
    }

    /// The sender check of the sockets serving `domain`.
    pub fn gate(&self, domain: Domain) -> Gate {
        Gate(self.guard.as_ref().and_then(|g| g.list(domain)))
    }

    /// Whether the bound ports use CURVE.
    pub fn is_curve(&self) -> bool {
        self.keys.is_some()
    }
}

/// The security options of a link this process connects.
pub struct ClientOptions<'a> {
    /// The peer, for messages (`the broker`, `the storage node`).
    pub peer: &'a str,
    /// Its host.
    pub host: &'a str,
    /// This side's `--secret-key`.
    pub secret_key: Option<&'a Path>,
    /// The peer's public key file.
    pub server_key: Option<&'a Path>,
    /// The option that names it (`--broker-key`, `--storage-key`).
    pub server_option: &'static str,
    /// `Some(insecure)` for a daemon, which refuses a plaintext link beyond loopback unless
    /// `--insecure`; `None` for a one-shot command, which may go plaintext anywhere (a CURVE
    /// server refuses it, and it then says why).
    pub insecure: Option<bool>,
}

/// The authentication of a link, from the options: CURVE with both keys, plaintext with none.
pub fn client_auth(opts: ClientOptions) -> Result<ClientAuth, SecurityError> {
    match (opts.secret_key, opts.server_key) {
        (Some(secret), Some(server)) => {
            if opts.insecure == Some(true) {
                return Err(SecurityError::Options(
                    "--insecure and --secret-key contradict each other: choose one".into(),
                ));
            }
            Ok(ClientAuth::Curve {
                keys: Arc::new(keys::read_secret_key(secret)?),
                server: keys::read_public_key(server)?,
            })
        }
        (None, Some(_)) => Err(SecurityError::Options(format!(
            "{} needs --secret-key: this side's own key, which {} must allow",
            opts.server_option, opts.peer
        ))),
        (Some(_), None) => Err(SecurityError::Options(format!(
            "--secret-key needs {}: the public key of {}, so that nobody can pose as it",
            opts.server_option, opts.peer
        ))),
        (None, None) => {
            if opts.insecure == Some(false) && !is_loopback(opts.host) {
                return Err(SecurityError::Plaintext {
                    what: format!("connect to {} at {} in plaintext", opts.peer, opts.host),
                    risk: "read the files on the way or pose as it",
                    fix: format!("--secret-key and {}", opts.server_option),
                });
            }
            Ok(ClientAuth::Plain)
        }
    }
}

/// Watches the handshakes of a connecting socket, so a client that gets no connection can say
/// whether the peer was silent or refused it (wrong server key, key not allowed, no CURVE).
pub struct HandshakeProbe {
    events: crate::inproc::Monitor,
    last_failure: Option<String>,
}

impl HandshakeProbe {
    /// Starts watching `sock`. Call before connect.
    pub fn attach(ctx: &zmq::Context, sock: &zmq::Socket) -> zmq::Result<HandshakeProbe> {
        Ok(HandshakeProbe {
            events: crate::inproc::Monitor::attach(ctx, sock, HANDSHAKE_FAILURES)?,
            last_failure: None,
        })
    }

    /// Why the last handshake failed, if one ever did: one clause for an error message.
    pub fn failure(&mut self) -> Option<String> {
        self.take_failure();
        self.last_failure.clone()
    }

    /// Why a handshake failed since the last call, if one did. libzmq does not reconnect
    /// after a refused handshake (a protocol error), so a long-lived client reconnects itself
    /// ([`crate::socket::reconnect`]) when this says so.
    pub fn take_failure(&mut self) -> Option<String> {
        let mut fresh = None;
        while let Some(e) = self.events.next() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "0.0.0.0",
            "::",
            "*",
            "10.0.0.1",
            "example.org",
            "",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn a_daemon_beyond_loopback_needs_keys_or_insecure() {
        let ctx = zmq::Context::new();
        let opts = |bind, insecure| ServerOptions {
            bind,
            secret_key: None,
            allow: vec![(Domain::Storage, None)],
            insecure,
        };
        let err = ServerSecurity::start(&ctx, opts("0.0.0.0", false))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("dfs keygen") && err.contains("--insecure") && err.contains("--allow"),
            "{err}"
        );
        assert!(!ServerSecurity::start(&ctx, opts("0.0.0.0", true))
            .unwrap()
            .is_curve());
        assert!(!ServerSecurity::start(&ctx, opts("127.0.0.1", false))
            .unwrap()
            .is_curve());
    }

    #[test]
    fn the_gate_checks_every_message_against_the_list_now() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            KeyPair::generate().unwrap().public(),
            KeyPair::generate().unwrap().public(),
        );
        let path = dir.path().join("allowed");
        std::fs::write(&path, format!("{a}\n")).unwrap();
        let list = Arc::new(AllowList::load(Domain::Fetch, &path).unwrap());
        let gate = Gate(Some(list.clone()));
        let from = |user: Option<String>| Inbound {
            peer: Some(b"peer".to_vec()),
            msg: Ok(schema::Message::Ping { id: 1 }),
            data: None,
            user_id: user,
        };
        assert!(gate.admits(&from(Some(a.z85()))));
        assert!(!gate.admits(&from(Some(b.z85()))));
        assert!(
            !gate.admits(&from(None)),
            "a connection without a ZAP user id"
        );
        assert!(!gate.admits(&from(Some("not a key".into()))));
        assert!(Gate::open().admits(&from(None)));

        std::fs::write(&path, format!("{b}\n")).unwrap();
        assert_eq!(list.reload().unwrap(), (1, 1));
        assert!(
            !gate.admits(&from(Some(a.z85()))),
            "revoked on a live connection"
        );
        assert!(gate.admits(&from(Some(b.z85()))));
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(list.reload().is_err());
        assert!(
            gate.admits(&from(Some(b.z85()))),
            "a bad reload keeps the old keys"
        );
    }

    #[test]
    fn client_options_go_together() {
        let opts = |secret: Option<&'static str>, server: Option<&'static str>, insecure| {
            client_auth(ClientOptions {
                peer: "the broker",
                host: "10.1.1.1",
                secret_key: secret.map(Path::new),
                server_key: server.map(Path::new),
                server_option: "--broker-key",
                insecure,
            })
        };
        let err = opts(None, Some("b.pub"), None).unwrap_err().to_string();
        assert!(err.contains("--broker-key needs --secret-key"), "{err}");
        let err = opts(Some("a.key"), None, None).unwrap_err().to_string();
        assert!(err.contains("--secret-key needs --broker-key"), "{err}");
        let err = opts(None, None, Some(false)).unwrap_err().to_string();
        assert!(
            err.contains("plaintext") && err.contains("--insecure"),
            "{err}"
        );
        assert!(!opts(None, None, Some(true)).unwrap().is_curve());
        assert!(!opts(None, None, None).unwrap().is_curve());
    }
}
