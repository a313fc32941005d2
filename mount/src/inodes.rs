//! Inode numbers: one per (view, path, version) the kernel was told of, stable for as long as
//! it may ask about it. A replaced file gets a new inode, as a rename over it would on a local
//! file system, so a file opened before the change keeps its size and bytes, and the kernel's
//! page cache of an inode never goes stale.

use schema::{Entry, Hash};
use std::collections::HashMap;
use std::sync::Arc;

/// Which tree an inode belongs to: [`MAIN`], or one view of the past under `.history/`.
pub type ViewId = u32;

/// The tree the mount shows at its root.
pub const MAIN: ViewId = 0;

/// The root folder's inode (FUSE's fixed root id).
pub const ROOT: u64 = 1;

/// The inode of `.history/`, the folder of views of the past.
pub const HISTORY: u64 = 2;

/// What an inode stands for.
#[derive(Debug, Clone)]
pub struct Known {
    pub view: ViewId,
    pub path: Arc<str>,
    /// The file's entry; `None` for a folder.
    pub file: Option<Entry>,
    /// Lookups the kernel holds (`forget` gives them back).
    lookups: u64,
}

type Key = (ViewId, Arc<str>, Option<(u64, Hash)>);

/// The inodes handed out, both ways.
pub struct Inodes {
    by_key: HashMap<Key, u64>,
    known: HashMap<u64, Known>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Inodes {
        let mut inodes = Inodes {
            by_key: HashMap::new(),
            known: HashMap::new(),
            next: HISTORY + 1,
        };
        let root: Arc<str> = "".into();
        inodes.by_key.insert((MAIN, root.clone(), None), ROOT);
        inodes.known.insert(
            ROOT,
            Known {
                view: MAIN,
                path: root,
                file: None,
                lookups: 0,
            },
        );
        inodes
    }
}

impl Inodes {
    /// The inode of `path` in `view`: a folder (`file` is `None`) or the given version of a
    /// file; made on first use.
    pub fn ino(&mut self, view: ViewId, path: &str, file: Option<&Entry>) -> u64 {
        let key: Key = (view, path.into(), file.map(|e| (e.version, e.blake3)));
        if let Some(ino) = self.by_key.get(&key) {
            return *ino;
        }
        let ino = self.next;
        self.next += 1;
        self.known.insert(
            ino,
            Known {
                view,
                path: key.1.clone(),
                file: file.cloned(),
                lookups: 0,
            },
        );
        self.by_key.insert(key, ino);
        ino
    }

    /// What `ino` stands for.
    pub fn get(&self, ino: u64) -> Option<&Known> {
        self.known.get(&ino)
    }

    /// The kernel was given `ino` in a lookup.
    pub fn looked_up(&mut self, ino: u64) {
        if let Some(k) = self.known.get_mut(&ino) {
            k.lookups += 1;
        }
    }

    /// The kernel gave back `n` lookups of `ino`.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if let Some(k) = self.known.get_mut(&ino) {
            k.lookups = k.lookups.saturating_sub(n);
        }
    }

    /// Drops the inodes the kernel no longer holds whose place `live` says is gone (a path no
    /// longer in its tree, an older version, a view that expired).
    pub fn retain(&mut self, live: impl Fn(&Known) -> bool) {
        let gone: Vec<u64> = self
            .known
            .iter()
            .filter(|(ino, k)| **ino != ROOT && k.lookups == 0 && !live(k))
            .map(|(ino, _)| *ino)
            .collect();
        for ino in gone {
            if let Some(k) = self.known.remove(&ino) {
                self.by_key
                    .remove(&(k.view, k.path, k.file.map(|e| (e.version, e.blake3))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::Class;

    fn entry(version: u64, bytes: &[u8]) -> Entry {
        Entry {
            name: "a.txt".into(),
            class: Class::Txt,
            size: bytes.len() as u64,
            blake3: Hash::of(bytes),
            modified: 0,
            version,
        }
    }

    #[test]
    fn a_new_version_is_a_new_inode_and_the_old_one_stays_while_held() {
        let mut inodes = Inodes::default();
        let v1 = entry(1, b"one");
        let v2 = entry(2, b"two");
        let one = inodes.ino(MAIN, "a.txt", Some(&v1));
        assert_eq!(inodes.ino(MAIN, "a.txt", Some(&v1)), one);
        let two = inodes.ino(MAIN, "a.txt", Some(&v2));
        assert_ne!(one, two);
        assert!(one > HISTORY && two > HISTORY);
        let dir = inodes.ino(MAIN, "docs", None);
        assert_eq!(inodes.ino(MAIN, "docs", None), dir);
        assert_ne!(
            inodes.ino(1, "docs", None),
            dir,
            "another view, another inode"
        );

        inodes.looked_up(one);
        // Only version 2 and the folder are live now.
        let live = |k: &Known| k.file.as_ref().is_none_or(|e| e.version == 2);
        inodes.retain(live);
        assert!(inodes.get(one).is_some(), "the kernel still holds it");
        inodes.forget(one, 1);
        inodes.retain(live);
        assert!(inodes.get(one).is_none());
        assert!(inodes.get(two).is_some() && inodes.get(ROOT).is_some());
        assert_eq!(
            inodes.get(ROOT).map(|k| k.path.to_string()),
            Some(String::new())
        );
    }
}
