//! How dfs talks over ZeroMQ, apart from what it says (that is `schema`): opening sockets with
//! the protocol's limits ([`socket`]), CURVE key files ([`keys`]), who may connect to which
//! socket and the check of every message's sender ([`security`]), and the ZAP handler that
//! enforces it ([`zap`]); a one-shot client's link to a daemon ([`client`]); sockets between a process's threads and connection events
//! ([`inproc`]).

pub mod auth;
pub mod client;
pub mod inproc;
pub mod keys;
pub mod security;
pub mod socket;
pub mod zap;
