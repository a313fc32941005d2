//! The metadata each stored file carries in its extended attribute `user.dfs.meta`: enough to
//! rebuild its index entry (name, class, hash, modified time, version) from the node alone.

use schema::{Class, Entry, Hash};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use xattr::FileExt as _;

/// Name of the extended attribute holding a stored file's metadata.
pub const META_XATTR: &str = "user.dfs.meta";

/// Version of the metadata format (`v` in the CBOR map).
pub const META_VERSION: u64 = 1;

/// The metadata of one stored file, as a CBOR map in `user.dfs.meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMeta {
    /// Format version, [`META_VERSION`].
    pub v: u64,
    /// The file's name (its path under its class folder).
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

/// Why a stored file's metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot read its extended attribute {META_XATTR}: {0}")]
    Io(#[from] io::Error),
    #[error("it has no extended attribute {META_XATTR}")]
    Missing,
    #[error("its extended attribute {META_XATTR} is not valid metadata: {0}")]
    Corrupt(String),
    #[error("its metadata has format version {0}, this node reads version {META_VERSION}")]
    Version(u64),
}

impl StoredMeta {
    /// The metadata of a file of `name` in `class`.
    pub fn new(name: &str, class: Class, blake3: Hash, modified: i64, version: u64) -> StoredMeta {
        StoredMeta {
            v: META_VERSION,
            name: name.to_string(),
            class,
            blake3,
            modified,
            version,
        }
    }

    /// The CBOR bytes stored in the attribute.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        // Writing a plain struct into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    /// Parses the attribute's bytes.
    pub fn decode(bytes: &[u8]) -> Result<StoredMeta, MetaError> {
        let meta: StoredMeta =
            ciborium::from_reader(bytes).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        if meta.v != META_VERSION {
            return Err(MetaError::Version(meta.v));
        }
        Ok(meta)
    }

    /// Reads the metadata of the open file `file`.
    pub fn read(file: &File) -> Result<StoredMeta, MetaError> {
        let bytes = file.get_xattr(META_XATTR)?.ok_or(MetaError::Missing)?;
        StoredMeta::decode(&bytes)
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

/// The metadata of the stored file at `path`, if the file exists and carries valid metadata.
/// Used to answer "unchanged" and to check renames.
pub fn stored(path: &std::path::Path) -> Option<StoredMeta> {
    let file = File::open(path).ok()?;
    StoredMeta::read(&file).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_the_attribute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        assert!(matches!(StoredMeta::read(&file), Err(MetaError::Missing)));
        let meta = StoredMeta::new("a/b.mp3", Class::Mp3, Hash::of(b"x"), -3, 7);
        meta.write(&file).unwrap();
        assert_eq!(StoredMeta::read(&file).unwrap(), meta);
        assert_eq!(stored(&path), Some(meta.clone()));
        assert_eq!(meta.entry(5).size, 5);
    }

    #[test]
    fn refuses_garbage_and_other_versions() {
        assert!(matches!(
            StoredMeta::decode(b"\xff\x00"),
            Err(MetaError::Corrupt(_))
        ));
        let mut meta = StoredMeta::new("a", Class::Txt, Hash::of(b""), 0, 1);
        meta.v = 2;
        assert!(matches!(
            StoredMeta::decode(&meta.encode()),
            Err(MetaError::Version(2))
        ));
    }
}
