//! The metadata each stored file carries in its extended attribute `user.dfs.meta`: enough to
//! rebuild its index entry (class, hash, modified time, version; the name is its path) from the
//! node alone.
//!
//! Format 2 is a CBOR array `[2, class, blake3, modified, version]` of at most
//! [`INODE_ROOM`] bytes, so that ext4 keeps it inside the inode (256-byte inodes leave room for
//! about 64 bytes of value). Format 1, a CBOR map that also held the name, took about 100 bytes:
//! ext4 gave every stored file an extra 4 KiB block for it, one more write when storing and one
//! more read when listing. Format 1 is still read.

use schema::{Class, Entry, Hash};
use serde::Deserialize;
use std::fs::File;
use std::io;
use xattr::FileExt as _;

/// Name of the extended attribute holding a stored file's metadata.
pub const META_XATTR: &str = "user.dfs.meta";

/// Version of the metadata format written (the first element of the CBOR array).
pub const META_VERSION: u64 = 2;

/// Most bytes an encoded attribute takes: what ext4 keeps in a 256-byte inode.
pub const INODE_ROOM: usize = 64;

/// The metadata of one stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMeta {
    /// The file's name (its path under its class folder); not stored in the attribute.
    pub name: String,
    /// Its class.
    pub class: Class,
    /// BLAKE3 of its content.
    pub blake3: Hash,
    /// Source modification time, ns since the Unix epoch.
    pub modified: i64,
    /// Version number given by the broker.
    pub version: u64,
}

/// Format 1 of the attribute: a CBOR map.
#[derive(Deserialize)]
struct MapV1 {
    v: u64,
    class: Class,
    blake3: Hash,
    modified: i64,
    version: u64,
}

/// Why a stored file's metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot read its extended attribute {META_XATTR}: {0}")]
    Io(#[from] io::Error),
    #[error("it has no extended attribute {META_XATTR}")]
    Missing,
    #[error("its extended attribute {META_XATTR} is not valid metadata: {0}")]
    Corrupt(String),
    #[error("its metadata has format version {0}, this node reads versions 1 and {META_VERSION}")]
    Version(u64),
}

impl StoredMeta {
    /// The metadata of a file of `name` in `class`.
    pub fn new(name: &str, class: Class, blake3: Hash, modified: i64, version: u64) -> StoredMeta {
        StoredMeta {
            name: name.to_string(),
            class,
            blake3,
            modified,
            version,
        }
    }

    /// The CBOR bytes stored in the attribute (format 2).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INODE_ROOM);
        let record = (
            META_VERSION,
            self.class,
            self.blake3,
            self.modified,
            self.version,
        );
        // Writing a tuple of plain values into a Vec cannot fail.
        let _ = ciborium::into_writer(&record, &mut out);
        out
    }

    /// Parses the attribute's bytes of the file called `name`.
    pub fn decode(bytes: &[u8], name: &str) -> Result<StoredMeta, MetaError> {
        let corrupt = |e: ciborium::de::Error<io::Error>| MetaError::Corrupt(e.to_string());
        // CBOR major type 4 (0x80-0x9f) is an array: format 2; type 5 (0xa0-0xbf) a map: format 1.
        let (v, class, blake3, modified, version) = match bytes.first() {
            Some(0x80..=0x9f) => {
                ciborium::from_reader::<(u64, Class, Hash, i64, u64), _>(bytes).map_err(corrupt)?
            }
            Some(0xa0..=0xbf) => {
                let m: MapV1 = ciborium::from_reader(bytes).map_err(corrupt)?;
                if m.v != 1 {
                    return Err(MetaError::Version(m.v));
                }
                (META_VERSION, m.class, m.blake3, m.modified, m.version)
            }
            _ => {
                return Err(MetaError::Corrupt(
                    "neither a CBOR array (format 2) nor a map (format 1)".into(),
                ))
            }
        };
        if v != META_VERSION {
            return Err(MetaError::Version(v));
        }
        Ok(StoredMeta::new(name, class, blake3, modified, version))
    }

    /// Reads the metadata of the open file `file`, stored as `name`.
    pub fn read(file: &File, name: &str) -> Result<StoredMeta, MetaError> {
        let bytes = file.get_xattr(META_XATTR)?.ok_or(MetaError::Missing)?;
        StoredMeta::decode(&bytes, name)
    }

    /// Attaches this metadata to the open file `file`.
    pub fn write(&self, file: &File) -> io::Result<()> {
        file.set_xattr(META_XATTR, &self.encode())
    }

    /// The listing entry of a stored file of `size` bytes with this metadata.
    pub fn entry(&self, size: u64) -> Entry {
        Entry {
            name: self.name.clone(),
            class: self.class,
            size,
            blake3: self.blake3,
            modified: self.modified,
            version: self.version,
        }
    }
}

/// The metadata of the file stored as `name` at `path`, if it exists and carries valid metadata.
/// Used to answer "unchanged" and to check renames.
pub fn stored(path: &std::path::Path, name: &str) -> Option<StoredMeta> {
    let file = File::open(path).ok()?;
    StoredMeta::read(&file, name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_the_attribute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        assert!(matches!(
            StoredMeta::read(&file, "a/b.mp3"),
            Err(MetaError::Missing)
        ));
        let meta = StoredMeta::new("a/b.mp3", Class::Mp3, Hash::of(b"x"), -3, 7);
        meta.write(&file).unwrap();
        assert_eq!(StoredMeta::read(&file, "a/b.mp3").unwrap(), meta);
        assert_eq!(stored(&path, "a/b.mp3"), Some(meta.clone()));
        assert_eq!(meta.entry(5).size, 5);
    }

    #[test]
    fn refuses_garbage_and_other_versions() {
        for garbage in [&b"\xff\x00"[..], b"", b"\x85\x02", b"\xa1\x61v\x01"] {
            assert!(
                matches!(StoredMeta::decode(garbage, "a"), Err(MetaError::Corrupt(_))),
                "{garbage:?}"
            );
        }
        let meta = StoredMeta::new("a", Class::Txt, Hash::of(b""), 0, 1);
        let mut bytes = meta.encode();
        bytes[1] = 3;
        assert!(matches!(
            StoredMeta::decode(&bytes, "a"),
            Err(MetaError::Version(3))
        ));
    }

    #[test]
    fn the_attribute_fits_in_the_inode_whatever_the_values() {
        for class in Class::ALL {
            let meta = StoredMeta::new(
                &"n".repeat(255),
                class,
                Hash([0xff; 32]),
                i64::MIN,
                u64::MAX,
            );
            let bytes = meta.encode();
            assert!(bytes.len() <= INODE_ROOM, "{} bytes", bytes.len());
            assert_eq!(StoredMeta::decode(&bytes, &meta.name).unwrap(), meta);
        }
    }

    #[test]
    fn format_1_maps_are_still_read_and_the_path_names_the_file() {
        #[derive(serde::Serialize)]
        struct V1<'a> {
            v: u64,
            name: &'a str,
            class: Class,
            blake3: Hash,
            modified: i64,
            version: u64,
        }
        let old = V1 {
            v: 1,
            name: "old/name.pdf",
            class: Class::Pdf,
            blake3: Hash::of(b"pdf"),
            modified: 1_700_000_000_000_000_000,
            version: 4,
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&old, &mut bytes).unwrap();
        let meta = StoredMeta::decode(&bytes, "docs/name.pdf").unwrap();
        assert_eq!(
            meta,
            StoredMeta::new(
                "docs/name.pdf",
                Class::Pdf,
                Hash::of(b"pdf"),
                old.modified,
                4
            )
        );
        let mut other = Vec::new();
        ciborium::into_writer(&V1 { v: 7, ..old }, &mut other).unwrap();
        assert!(matches!(
            StoredMeta::decode(&other, "x"),
            Err(MetaError::Version(7))
        ));
    }
}
