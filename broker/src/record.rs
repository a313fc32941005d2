//! The index record: what the broker keeps about one stored file, as a versioned CBOR value.
//!
//! The key of a record is the file's name (UTF-8 bytes); the value is the CBOR array
//! `[2, class, size, blake3, modified, version]`, whose first element is the layout version.
//! Layout 1, the map `{v: 1, class, size, blake3, modified, version, state: "stored"}` written
//! by earlier brokers, is still read. Listings decode a million of these, and an array decodes in
//! about half the time of a map.

use crate::error::IndexError;
use schema::{Class, Entry, Hash};
use serde::Deserialize;

/// Version of the record layout written by this broker.
pub const RECORD_VERSION: u32 = 2;

/// One index value: everything about a file but its name. Only files the node holds (and can
/// serve) have a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
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
}

/// Layout 2 on disk, in field order.
type Layout2 = (u32, Class, u64, Hash, i64, u64);

/// Layout 1: a map, kept readable for indexes written by earlier brokers.
#[derive(Deserialize)]
struct Layout1 {
    v: u32,
    class: Class,
    size: u64,
    blake3: Hash,
    modified: i64,
    version: u64,
    state: State1,
}

/// Layout 1's `state`; `stored` was its only value.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum State1 {
    Stored,
}

impl Record {
    /// A stored file's record.
    pub fn stored(class: Class, size: u64, blake3: Hash, modified: i64, version: u64) -> Record {
        Record {
            class,
            size,
            blake3,
            modified,
            version,
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

    /// The CBOR value stored in sled (layout [`RECORD_VERSION`]).
    pub fn encode(&self) -> Vec<u8> {
        let value: Layout2 = (
            RECORD_VERSION,
            self.class,
            self.size,
            self.blake3,
            self.modified,
            self.version,
        );
        let mut out = Vec::with_capacity(64);
        // Writing plain data to a Vec cannot fail.
        if let Err(e) = ciborium::into_writer(&value, &mut out) {
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
        let newer = |v: u32| bad(format!("record version {v} (this broker reads 1 and 2)"));
        // CBOR major type 5 (a map) is layout 1; anything else must be a layout-2 array.
        if bytes.first().is_some_and(|b| b >> 5 == 5) {
            let r: Layout1 = ciborium::from_reader(bytes).map_err(|e| bad(e.to_string()))?;
            if r.v != 1 {
                return Err(newer(r.v));
            }
            let State1::Stored = r.state;
            return Ok(Record::stored(
                r.class, r.size, r.blake3, r.modified, r.version,
            ));
        }
        match ciborium::from_reader::<Layout2, _>(bytes) {
            Ok((RECORD_VERSION, class, size, blake3, modified, version)) => {
                Ok(Record::stored(class, size, blake3, modified, version))
            }
            Ok((v, ..)) => Err(newer(v)),
            // A later layout may hold other fields: name its version when it has one.
            Err(e) => match ciborium::from_reader::<ciborium::Value, _>(bytes) {
                Ok(ciborium::Value::Array(items)) => {
                    match items.first().and_then(|v| v.as_integer()) {
                        Some(v) if u32::try_from(v).is_ok_and(|v| v != RECORD_VERSION) => {
                            Err(newer(u32::try_from(v).unwrap_or(0)))
                        }
                        _ => Err(bad(e.to_string())),
                    }
                }
                _ => Err(bad(e.to_string())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciborium::Value;

    #[test]
    fn round_trips_as_a_versioned_array() {
        let r = Record::stored(Class::Mp3, 12, Hash::of(b"x"), -3, 7);
        let bytes = r.encode();
        assert_eq!(Record::decode(b"a.mp3", &bytes).unwrap(), r);
        let v: Value = ciborium::from_reader(&bytes[..]).unwrap();
        let items = v.as_array().unwrap();
        assert_eq!(items.len(), 6);
        assert_eq!(items[0], Value::Integer(2.into()));
        assert_eq!(items[1], Value::Text("mp3".into()));
        assert_eq!(items[5], Value::Integer(7.into()));
    }

    #[test]
    fn reads_layout_1_maps() {
        let h = Hash::of(b"old");
        let map = Value::Map(vec![
            (Value::Text("v".into()), Value::Integer(1.into())),
            (Value::Text("class".into()), Value::Text("pdf".into())),
            (Value::Text("size".into()), Value::Integer(3.into())),
            (Value::Text("blake3".into()), Value::Bytes(h.0.to_vec())),
            (Value::Text("modified".into()), Value::Integer((-5).into())),
            (Value::Text("version".into()), Value::Integer(4.into())),
            (Value::Text("state".into()), Value::Text("stored".into())),
        ]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&map, &mut bytes).unwrap();
        let r = Record::decode(b"old.pdf", &bytes).unwrap();
        assert_eq!(r, Record::stored(Class::Pdf, 3, h, -5, 4));
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let h = Hash::of(b"y");
        for v in [
            Value::Array(vec![Value::Integer(3.into()), Value::Text("txt".into())]),
            Value::Array(vec![
                Value::Integer(3.into()),
                Value::Text("txt".into()),
                Value::Integer(1.into()),
                Value::Bytes(h.0.to_vec()),
                Value::Integer(0.into()),
                Value::Integer(1.into()),
            ]),
            Value::Map(vec![(Value::Text("v".into()), Value::Integer(3.into()))]),
        ] {
            let mut bytes = Vec::new();
            ciborium::into_writer(&v, &mut bytes).unwrap();
            let err = Record::decode(b"n", &bytes).unwrap_err().to_string();
            assert!(
                err.contains("record version 3") || err.contains("missing field"),
                "{err}"
            );
        }
        assert!(Record::decode(b"n", b"\xffgarbage").is_err());
        assert!(Record::decode(b"n", b"").is_err());
    }

    #[test]
    fn entry_round_trip() {
        let r = Record::stored(Class::Pdf, 5, Hash::of(b"z"), 9, 2);
        let e = r.entry("d.pdf".into());
        assert_eq!(e.name, "d.pdf");
        assert_eq!(Record::from_entry(&e), r);
    }
}
