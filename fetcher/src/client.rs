//! The link to the broker's fetch port: `net::client::Client` (one DEALER, requests with fresh
//! ids, bounded waits), connected with the fetcher's keys and stopped by SIGINT/SIGTERM.

use crate::error::FetchError;
use daemon::Shutdown;
use net::security::ClientAuth;
use std::time::Duration;

pub use net::client::Client;

/// How a client of the broker's fetch port at `endpoint` authenticates: CURVE with the client's
/// `secret_key` and the broker's public `broker_key` (`--secret-key`, `--broker-key`), or none
/// on loopback.
pub fn broker_auth(
    endpoint: &str,
    secret_key: Option<&std::path::Path>,
    broker_key: Option<&std::path::Path>,
) -> Result<ClientAuth, FetchError> {
    Ok(net::security::client_auth(net::security::ClientOptions {
        peer: "the broker",
        host: endpoint,
        secret_key,
        server_key: broker_key,
        server_option: "--broker-key",
        insecure: None,
    })?)
}

/// Connects to the broker at `endpoint`, waiting at most `secs`; every wait ends at `stop`.
pub fn connect(
    endpoint: &str,
    auth: &ClientAuth,
    secs: f64,
    stop: Shutdown,
) -> Result<Client, FetchError> {
    let interrupted = Box::new(move || stop.is_triggered());
    let timeout = Duration::from_secs_f64(secs);
    Ok(Client::connect(endpoint, auth, timeout, Some(interrupted))?)
}
