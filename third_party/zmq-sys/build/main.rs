//! Builds libzmq from `zeromq-src` with CURVE, linked against the libsodium that
//! `libsodium-sys-stable` built from its bundled source.

use std::env;

pub fn configure() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");

    // `libsodium-sys-stable` (links = "sodium") exports where it put the library and headers.
    let lib_dir = env::var("DEP_SODIUM_LIB")
        .expect("libsodium-sys-stable did not report its library folder (DEP_SODIUM_LIB)");
    let include_dir = env::var("DEP_SODIUM_INCLUDE")
        .expect("libsodium-sys-stable did not report its header folder (DEP_SODIUM_INCLUDE)");

    // This crate is a path dependency, so cargo repeats its build script's warnings on every
    // build; the vendored C++ warns a lot and none of it is ours to fix.
    let flags = env::var("CXXFLAGS").unwrap_or_default();
    env::set_var("CXXFLAGS", format!("{flags} -w"));

    // The draft API is enabled for `zmq_socket_monitor_versioned` only: version 2 monitor
    // events carry the peer's address, which the daemons log when they refuse a handshake.
    zeromq_src::Build::new()
        .with_libsodium(Some(zeromq_src::LibLocation::new(&lib_dir, &include_dir)))
        .enable_draft(true)
        .build();

    // zeromq-src 0.2.6 prints this search path with `{:?}`, quotes included, which the linker
    // cannot use: say it again, plainly.
    println!("cargo:rustc-link-search=native={lib_dir}");
}

fn main() {
    configure()
}
