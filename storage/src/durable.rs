//! Making a verified upload the node's current file: its metadata attribute, then the one
//! durable write every role uses (`disk::atomic`: temporary file, fsync, rename, fsync the
//! folder).

use crate::error::StoreError;
use crate::meta::StoredMeta;
use disk::atomic::{FolderSyncs, TempFile};
use std::path::Path;

/// Makes the complete, verified `temp` the file at `dest` (below `class_dir`), durably, with its
/// metadata: once this returns `Ok`, a crash cannot lose the file nor show a partial one under
/// `dest`. The folder fsync may be shared with other commits into the same folder.
pub fn commit(
    temp: TempFile,
    meta: &StoredMeta,
    class_dir: &Path,
    dest: &Path,
    folders: &FolderSyncs,
) -> Result<(), StoreError> {
    // The metadata travels with the file: the attribute is set before the fsync so that it is
    // durable together with the content.
    meta.write(temp.file())
        .map_err(|e| StoreError::io("set the metadata attribute of", temp.path(), e))?;
    temp.commit(
        schema::time::from_ns(meta.modified),
        class_dir,
        dest,
        folders,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use disk::atomic::remove_empty_parents;
    use schema::{Class, Hash};
    use std::fs;
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
        commit(temp, &meta, &class_dir, &dest, &FolderSyncs::default()).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        assert!(!dir.path().join("t.part").exists());
        assert_eq!(crate::meta::stored(&dest, "a/b/c.txt"), Some(meta));
        let mtime = fs::metadata(&dest).unwrap().modified().unwrap();
        assert_eq!(schema::time::to_ns(mtime), 1_000_000_000);

        fs::remove_file(&dest).unwrap();
        remove_empty_parents(&class_dir, &dest);
        assert!(!class_dir.join("a").exists());
        assert!(class_dir.is_dir());
    }
}
