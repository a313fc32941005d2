//! `HOST[:PORT]` parsing never panics, and what it accepts makes an endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use daemon::host_port;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((host, port)) = host_port(text, 9000) {
        let ep = net::socket::endpoint(&host, port);
        assert!(ep.starts_with("tcp://"));
    }
});
