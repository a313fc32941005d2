//! The index record: what the broker keeps about one stored file, as a versioned CBOR value.
//!
//! The key of a record is the file's name (UTF-8 bytes); the value is the CBOR map
//! `{v: 1, class, size, blake3, modified, version, state}`. `v` lets a later broker read (or
//! refuse) records written by this one.

use crate::error::IndexError;
use schema::{Class, Entry, Hash};
use serde::{Deserialize, Serialize};

/// Version of the record layout written by this broker.
pub const RECORD_VERSION: u32 = 1;

/// Whether a file can be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The node holds this version and it can be read.
    Stored,
}

/// One index value: everything about a file but its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Layout version ([`RECORD_VERSION`]).
    pub v: u32,
    /// Storage class (and so the node port) the file lives in.
    pub class: Class,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole content.
    pub blake3: Hash,
    /// Source modification time, ns since the Unix epoch.
    pub modified: i64,
    /// Version number of this name (1 for the first upload).
    pub version: u64,
    /// Whether the file can be served.
    pub state: State,
}

impl Record {
    /// A stored file's record.
    pub fn stored(class: Class, size: u64, blake3: Hash, modified: i64, version: u64) -> Record {
        Record {
            v: RECORD_VERSION,
            class,
            size,
            blake3,
            modified,
            version,
            state: State::Stored,
        }
    }

    /// The record of a listing entry (used when rebuilding from a node).
    pub fn from_entry(e: &Entry) -> Record {
        Record::stored(e.class, e.size, e.blake3, e.modified, e.version)
    }

    /// The listing entry of this record under `name`.
    pub fn entry(&self, name: String) -> Entry {
        Entry {
            name,
            class: self.class,
            size: self.size,
            blake3: self.blake3,
            modified: self.modified,
            version: self.version,
        }
    }

    /// The CBOR value stored in sled.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(80);
        // Writing plain data to a Vec cannot fail.
        if let Err(e) = ciborium::into_writer(self, &mut out) {
            tracing::error!("cannot encode an index record: {e}");
        }
        out
    }

    /// The record in sled value `bytes`, stored under `name`.
    pub fn decode(name: &[u8], bytes: &[u8]) -> Result<Record, IndexError> {
        let bad = |reason: String| IndexError::BadRecord {
            name: String::from_utf8_lossy(name).into_owned(),
            reason,
        };
        let r: Record = ciborium::from_reader(bytes).map_err(|e| bad(e.to_string()))?;
        if r.v != RECORD_VERSION {
            return Err(bad(format!(
                "record version {} (this broker reads {RECORD_VERSION})",
                r.v
            )));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciborium::Value;

    #[test]
    fn round_trips_and_is_a_versioned_map() {
        let r = Record::stored(Class::Mp3, 12, Hash::of(b"x"), -3, 7);
        let bytes = r.encode();
        assert_eq!(Record::decode(b"a.mp3", &bytes).unwrap(), r);
        let v: Value = ciborium::from_reader(&bytes[..]).unwrap();
        let map = v.as_map().unwrap();
        let keys: Vec<_> = map.iter().map(|(k, _)| k.as_text().unwrap()).collect();
        assert_eq!(
            keys,
            ["v", "class", "size", "blake3", "modified", "version", "state"]
        );
        assert_eq!(map[6].1, Value::Text("stored".into()));
        assert_eq!(map[1].1, Value::Text("mp3".into()));
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let mut r = Record::stored(Class::Txt, 1, Hash::of(b"y"), 0, 1);
        r.v = 2;
        let err = Record::decode(b"n", &r.encode()).unwrap_err();
        assert!(err.to_string().contains("record version 2"), "{err}");
        assert!(Record::decode(b"n", b"\xffgarbage").is_err());
    }

    #[test]
    fn entry_round_trip() {
        let r = Record::stored(Class::Pdf, 5, Hash::of(b"z"), 9, 2);
        let e = r.entry("d.pdf".into());
        assert_eq!(e.name, "d.pdf");
        assert_eq!(Record::from_entry(&e), r);
    }
}
