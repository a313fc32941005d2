//! The volume owners the broker records on the node (`set_owner`, `owners`; docs/CONTRACT.md
//! §8), so that a broker whose index is lost gets them back with the files when it rebuilds.
//!
//! They live in `ROOT/.dfs/owners.json` (volume → owner, the root volume's name empty), replaced
//! atomically and durably on each change.

use crate::error::StoreError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Most volumes recorded: an `owned` answer stays well within one frame.
pub const MAX_VOLUMES: usize = 4096;

/// The owners file of one storage root.
#[derive(Debug, Clone)]
pub struct Owners {
    path: PathBuf,
}

impl Owners {
    /// The owners file under the storage `root`.
    pub fn new(root: &Path) -> Owners {
        Owners {
            path: root.join(".dfs").join("owners.json"),
        }
    }

    /// Every volume recorded, with its owner; none when the file does not exist yet.
    pub fn all(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(StoreError::io("read", &self.path, e)),
        };
        serde_json::from_slice(&text).map_err(|e| {
            StoreError::Protocol(format!(
                "{} is not a JSON object of volume owners: {e}",
                self.path.display()
            ))
        })
    }

    /// Records that `owner` owns `volume`, durably (nothing is written when it already does).
    pub fn set(&self, volume: &str, owner: &str) -> Result<(), StoreError> {
        let mut all = self.all()?;
        if !admit(&mut all, volume, owner)? {
            return Ok(());
        }
        let text = serde_json::to_vec_pretty(&all).unwrap_or_default();
        Ok(disk::atomic::replace_file(&self.path, &text)?)
    }
}

/// Records `owner` for `volume` in `all` after checking both; `false` when it was recorded
/// already (nothing to write).
pub fn admit(
    all: &mut BTreeMap<String, String>,
    volume: &str,
    owner: &str,
) -> Result<bool, StoreError> {
    schema::names::Volume::named(volume)
        .map_err(|e| StoreError::Protocol(format!("set_owner: {e}")))?;
    if owner.is_empty() {
        return Err(StoreError::Protocol("set_owner: the owner is empty".into()));
    }
    if all.get(volume).map(String::as_str) == Some(owner) {
        return Ok(false);
    }
    if !all.contains_key(volume) && all.len() >= MAX_VOLUMES {
        return Err(StoreError::Protocol(format!(
            "set_owner: the node records at most {MAX_VOLUMES} volumes"
        )));
    }
    all.insert(volume.to_string(), owner.to_string());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_recorded_replaced_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(".dfs")).unwrap();
        let o = Owners::new(root.path());
        assert!(o.all().unwrap().is_empty());
        o.set("", "host:/home/a").unwrap();
        o.set("photos", "key abc").unwrap();
        o.set("photos", "key def").unwrap();
        let all = o.all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[""], "host:/home/a");
        assert_eq!(all["photos"], "key def");
        let e = o.set("a/b", "x").unwrap_err();
        assert!(e.to_string().contains("set_owner"), "{e}");
        assert!(o.set("v", "").is_err());
        std::fs::write(root.path().join(".dfs/owners.json"), b"[1,2").unwrap();
        let e = o.all().unwrap_err();
        assert!(e.to_string().contains("owners.json"), "{e}");
    }
}
