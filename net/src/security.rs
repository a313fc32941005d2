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

pub use crate::auth::{
    handshake_failure, is_loopback, AllowList, ClientAuth, Domain, Gate, HandshakeProbe,
    SecurityError, HANDSHAKE_FAILURES,
};
use crate::keys::{self, KeyPair};
use crate::zap::{Guard, Monitors};
use std::path::Path;
use std::sync::Arc;

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
        Gate::of(self.guard.as_ref().and_then(|g| g.list(domain)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;
    use schema::codec::Inbound;

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
        let gate = Gate::of(Some(list.clone()));
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
