//! Making a file durable under its final name, and the folder operations around it.
//!
//! The write path follows Garage's `write_block_inner` (deuxfleurs-org/garage,
//! `src/block/manager.rs`): write to a temporary file, fsync it, rename it over the final name,
//! fsync the folder. Each step is there for a crash at the worst moment; see [`commit`].

use crate::error::StoreError;
use crate::meta::StoredMeta;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// A temporary file of an upload in progress. Dropping it removes the file, so a failed or
/// abandoned upload leaves nothing behind; [`commit`] disarms it once the file has its final name.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: File,
    armed: bool,
}

impl TempFile {
    /// Creates `path`, which must not exist yet.
    pub fn create(path: PathBuf) -> Result<TempFile, StoreError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io("create the temporary file", &path, e))?;
        Ok(TempFile {
            path,
            file,
            armed: true,
        })
    }

    /// The open file, for writing content.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), "cannot remove a temporary file: {e}");
                }
            }
        }
    }
}

/// Makes the complete, verified `temp` the file at `dest` (below `class_dir`), durably:
/// once this returns `Ok`, a crash cannot lose the file nor show a partial one under `dest`.
pub fn commit(
    temp: TempFile,
    meta: &StoredMeta,
    class_dir: &Path,
    dest: &Path,
) -> Result<(), StoreError> {
    let tpath = temp.path.clone();
    // The metadata travels with the file: the attribute and the modification time (like
    // `rsync -a`) are set before the fsync so that they are durable together with the content.
    meta.write(&temp.file)
        .map_err(|e| StoreError::io("set the metadata attribute of", &tpath, e))?;
    let mtime = schema::time::from_ns(meta.modified);
    temp.file
        .set_modified(mtime)
        .map_err(|e| StoreError::io("set the modification time of", &tpath, e))?;
    // fsync the content before the rename: without it the file system may persist the rename
    // before the data, and a crash would leave an empty or torn file under the final name.
    temp.file
        .sync_all()
        .map_err(|e| StoreError::io("fsync", &tpath, e))?;
    // rename is atomic: a reader sees the previous version or this one, never a mix. A folder
    // made on the way may be removed by a concurrent delete of its last file; try again then.
    let mut attempts = 0;
    loop {
        create_parents(class_dir, dest)?;
        match fs::rename(&tpath, dest) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
            Err(e) => return Err(StoreError::io("rename the finished upload to", dest, e)),
        }
    }
    let mut temp = temp;
    temp.armed = false;
    // fsync the folder: the rename is a change of the folder, and only this makes the new name
    // durable before the node answers `done`.
    fsync_parent(dest)
}

/// fsyncs the folder `dir` (persists the entries created, renamed or removed in it).
pub fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync the folder", dir, e))
}

/// fsyncs the folder holding `path`.
pub fn fsync_parent(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(dir) => fsync_dir(dir),
        None => Ok(()),
    }
}

/// Creates the missing folders between `class_dir` and the file `dest`, fsyncing the parent of
/// each folder it creates so that the new folder survives a crash.
pub fn create_parents(class_dir: &Path, dest: &Path) -> Result<(), StoreError> {
    let Some(parent) = dest.parent() else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    let Ok(rel) = parent.strip_prefix(class_dir) else {
        return Err(StoreError::io(
            "create the folder",
            parent,
            io::Error::new(io::ErrorKind::InvalidInput, "outside the class folder"),
        ));
    };
    let mut dir = class_dir.to_path_buf();
    for part in rel.components() {
        let up = dir.clone();
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) => fsync_dir(&up)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(StoreError::io("create the folder", &dir, e)),
        }
    }
    Ok(())
}

/// Removes the folders between `class_dir` and the removed file `path` that are now empty,
/// deepest first, and fsyncs the folder that lost each of them.
pub fn remove_empty_parents(class_dir: &Path, path: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == class_dir || !d.starts_with(class_dir) {
            break;
        }
        // remove_dir fails on a folder that still holds something: that ends the climb.
        if fs::remove_dir(d).is_err() {
            break;
        }
        if let Err(e) = fsync_parent(d) {
            tracing::debug!("{e}");
        }
        dir = d.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{Class, Hash};
    use std::io::Write;

    #[test]
    fn commit_moves_a_verified_temp_into_place_with_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let class_dir = dir.path().join("txt");
        fs::create_dir(&class_dir).unwrap();
        let temp = TempFile::create(dir.path().join("t.part")).unwrap();
        temp.file().write_all(b"hello").unwrap();
        let meta = StoredMeta::new(
            "a/b/c.txt",
            Class::Txt,
            Hash::of(b"hello"),
            1_000_000_000,
            2,
        );
        let dest = class_dir.join("a/b/c.txt");
        commit(temp, &meta, &class_dir, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        assert!(!dir.path().join("t.part").exists());
        assert_eq!(crate::meta::stored(&dest), Some(meta));
        let mtime = fs::metadata(&dest).unwrap().modified().unwrap();
        assert_eq!(schema::time::to_ns(mtime), 1_000_000_000);

        fs::remove_file(&dest).unwrap();
        remove_empty_parents(&class_dir, &dest);
        assert!(!class_dir.join("a").exists());
        assert!(class_dir.is_dir());
    }

    #[test]
    fn a_dropped_temp_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.part");
        let temp = TempFile::create(path.clone()).unwrap();
        assert!(path.exists());
        assert!(TempFile::create(path.clone()).is_err());
        drop(temp);
        assert!(!path.exists());
    }
}
