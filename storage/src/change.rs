//! Deletes and renames on the class ports. Both are quick (no content moves), so the socket
//! thread does them itself; each is made durable by fsyncing the folders it changes.

use crate::error::StoreError;
use crate::layout::Layout;
use crate::meta::{self, StoredMeta};
use disk::atomic::{create_parents, fsync_dir, fsync_parent, remove_empty_parents};
use schema::{Class, Hash, Routes};
use std::fs::{self, File};
use std::io;

/// Removes `name` from `class`, if stored; removes the folders it leaves empty.
pub fn delete(layout: &Layout, class: Class, name: &str) -> Result<(), StoreError> {
    let path = layout.file_path(class, name)?;
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(()),
        Err(e) => return Err(StoreError::io("look at", &path, e)),
    }
    // The deleted version stays in the history.
    if let Some(old) = meta::stored(&path, name) {
        layout.history().keep(&path, &old, now(), true)?;
    }
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("delete", &path, e)),
    }
    // The removal is a change of the folder: fsync it so that it is durable before `done`.
    fsync_parent(&path)?;
    remove_empty_parents(&layout.class_dir(class), &path);
    tracing::info!(name = %schema::names::escape(name), %class, "deleted");
    Ok(())
}

/// The fields of a `rename` as a node gets it.
#[derive(Debug, Clone)]
pub struct Rename<'a> {
    /// The class port it arrived on: the class of `from`.
    pub class: Class,
    pub from: &'a str,
    pub to: &'a str,
    /// The hash `from` must be stored with.
    pub blake3: Hash,
    /// The class of `to`; by the default routes when absent.
    pub to_class: Option<Class>,
    /// The version of `to` after the move; one more than a stored `to`'s, else 1, when absent.
    pub version: Option<u64>,
}

/// Moves the stored `from` to `to` with new metadata; returns the version of `to`.
pub fn rename(layout: &Layout, r: &Rename) -> Result<u64, StoreError> {
    let src = layout.file_path(r.class, r.from)?;
    let to_class = r
        .to_class
        .unwrap_or_else(|| Routes::default().class_of(r.to));
    let dst = layout.file_path(to_class, r.to)?;
    let not_found = |why: String| StoreError::NotFound(format!("{}: {why}", r.from));
    let file = match File::open(&src) {
        Ok(f) if f.metadata().map(|m| m.is_file()).unwrap_or(false) => f,
        Ok(_) => return Err(not_found("not stored on this node".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_found("not stored on this node".into()))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(not_found("not stored on this node".into()))
        }
        Err(e) => return Err(StoreError::io("open", &src, e)),
    };
    let old = StoredMeta::read(&file, r.from).map_err(|e| not_found(format!("stored, but {e}")))?;
    if old.blake3 != r.blake3 {
        return Err(not_found(format!(
            "stored with hash {}, not {}",
            old.blake3, r.blake3
        )));
    }
    let version = r.version.unwrap_or_else(|| {
        meta::stored(&dst, r.to)
            .filter(|_| dst != src)
            .map_or(1, |m| m.version + 1)
    });
    let new = StoredMeta::new(r.to, to_class, old.blake3, old.modified, version);
    // History: `from` stops being current (moved away), and a version `to` had is replaced.
    if dst != src {
        let now = now();
        layout.history().keep(&src, &old, now, true)?;
        if let Some(replaced) = meta::stored(&dst, r.to) {
            layout.history().keep(&dst, &replaced, now, false)?;
        }
    }
    // The new metadata is made durable before the move, so that the file is never found under
    // its new name with its old metadata.
    new.write(&file)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io("update the metadata of", &src, e))?;
    let moved = create_parents(&layout.class_dir(to_class), &dst)
        .map_err(StoreError::from)
        .and_then(|()| {
            fs::rename(&src, &dst).map_err(|e| StoreError::io("move the stored file to", &dst, e))
        });
    if let Err(e) = moved {
        // Put the old metadata back: the file stays what it was.
        if let Err(undo) = old.write(&file) {
            tracing::warn!(path = %src.display(), "cannot restore the metadata: {undo}");
        }
        return Err(e);
    }
    // Both folders changed: fsync each so that the move is durable before `done`.
    fsync_parent(&dst)?;
    if let Some(from_dir) = src.parent().filter(|d| Some(*d) != dst.parent()) {
        fsync_dir(from_dir)?;
    }
    remove_empty_parents(&layout.class_dir(r.class), &src);
    tracing::info!(
        from = %schema::names::escape(r.from),
        to = %schema::names::escape(r.to),
        %to_class,
        version,
        "renamed"
    );
    Ok(version)
}

/// The time now, ns since the Unix epoch.
fn now() -> i64 {
    schema::time::to_ns(std::time::SystemTime::now())
}
