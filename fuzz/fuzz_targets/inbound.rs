//! Whole inbound messages as a daemon reads them: the input is split into frames (each a
//! little-endian u16 length, then that many bytes), sent by a DEALER over inproc to a ROUTER
//! set up like every bound socket, and read back with `codec::recv`, which decodes the header
//! and checks the data frame against it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::codec;
use std::sync::{Mutex, OnceLock};

struct Pair {
    _ctx: zmq::Context,
    router: zmq::Socket,
    dealer: zmq::Socket,
}

fn pair() -> &'static Mutex<Pair> {
    static PAIR: OnceLock<Mutex<Pair>> = OnceLock::new();
    PAIR.get_or_init(|| {
        let ctx = zmq::Context::new();
        let router = ctx.socket(zmq::ROUTER).expect("a ROUTER socket");
        router.set_rcvtimeo(1000).expect("a receive timeout");
        router.bind("inproc://fuzz-inbound").expect("bind inproc");
        let dealer = ctx.socket(zmq::DEALER).expect("a DEALER socket");
        dealer
            .connect("inproc://fuzz-inbound")
            .expect("connect inproc");
        Mutex::new(Pair {
            _ctx: ctx,
            router,
            dealer,
        })
    })
}

/// The frames in `data`: u16 LE length, then the bytes (the last frame takes what is left).
fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < 64 {
        let len = u16::from_le_bytes([data[0], data[1]]) as usize;
        let rest = &data[2..];
        let len = len.min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let frames = frames(data);
    if frames.is_empty() {
        return;
    }
    // The header and data layer alone, as `recv` applies it.
    if let Ok(msg) = codec::decode(frames[0]) {
        let _ = codec::check_data(&msg, frames.get(1).copied());
    }
    // And through a real socket.
    let pair = pair().lock().unwrap_or_else(|p| p.into_inner());
    pair.dealer
        .send_multipart(frames.iter().copied(), 0)
        .expect("send over inproc");
    let inbound = codec::recv(&pair.router, true, 0).expect("the message just sent");
    assert!(inbound.peer.is_some());
    match &inbound.msg {
        Ok(msg) => {
            assert!(frames.len() <= 2);
            codec::check_data(msg, inbound.data.as_deref()).expect("recv checked the data");
        }
        Err(rejected) => {
            let _ = rejected.reply();
        }
    }
});
