//! The ports a peer finds the daemons on when nobody said otherwise. Every default of the command
//! line, the config files and the address parsing comes from here.

/// The broker's ingest port: watchers upload, rename and delete here.
pub const INGEST_PORT: u16 = 12345;
/// The broker's fetch port: fetchers list and read here (never write).
pub const FETCH_PORT: u16 = 12346;
/// The storage node's base port: the classes on `BASE..BASE+3` (by
/// [`Class::port_offset`](crate::Class::port_offset)), reads on `BASE + SERVE_OFFSET`.
pub const STORAGE_BASE_PORT: u16 = 9000;
/// Port offset of the storage node's serve (read) socket from its base port.
pub const SERVE_OFFSET: u16 = 4;

/// The default `--broker` of `dfs watch`.
pub const INGEST_ADDR: &str = "127.0.0.1:12345";
/// The default `--broker` of `dfs fetch` and `dfs status`.
pub const FETCH_ADDR: &str = "127.0.0.1:12346";
/// The default `--storage` of `dfs broker`.
pub const STORAGE_ADDR: &str = "127.0.0.1:9000";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_addresses_name_the_default_ports() {
        assert_eq!(INGEST_ADDR, format!("127.0.0.1:{INGEST_PORT}"));
        assert_eq!(FETCH_ADDR, format!("127.0.0.1:{FETCH_PORT}"));
        assert_eq!(STORAGE_ADDR, format!("127.0.0.1:{STORAGE_BASE_PORT}"));
    }
}
