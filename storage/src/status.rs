//! The node's answer to `status` (for `dfs status`): what it stores, counted by a walk of the
//! class folders on a sync worker (never on the socket thread), and the space left on its disk.

use crate::layout::Layout;
use crate::s3::S3;
use schema::status::{ClassUsage, DiskSpace, NodeReport, SOFTWARE_VERSION};
use schema::Class;
use walkdir::WalkDir;

/// What the socket thread knows when `status` comes: the transfers open and the uptime.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub uploads: u64,
    pub reads: u64,
    pub uptime: u64,
    /// The node's routing table.
    pub routes: std::collections::BTreeMap<String, Class>,
}

/// Files and bytes under each class folder (regular files only; unreadable entries are
/// skipped with a warning, as listings skip them).
pub fn usage(layout: &Layout) -> Vec<ClassUsage> {
    Class::ALL
        .iter()
        .map(|&class| {
            let dir = layout.class_dir(class);
            let mut usage = ClassUsage {
                class,
                files: 0,
                bytes: 0,
            };
            for item in WalkDir::new(&dir).min_depth(1).follow_links(false) {
                let item = match item {
                    Ok(item) => item,
                    Err(e) => {
                        tracing::warn!(folder = %dir.display(), "status skips an entry: {e}");
                        continue;
                    }
                };
                if !item.file_type().is_file() {
                    continue;
                }
                match item.metadata() {
                    Ok(m) => {
                        usage.files += 1;
                        usage.bytes += m.len();
                    }
                    Err(e) => tracing::warn!(path = %item.path().display(), "status skips: {e}"),
                }
            }
            usage
        })
        .collect()
}

/// The node's report: `snapshot` from the socket thread, usage and disk space read now. With
/// an S3 backend (`s3`) what is stored is counted in the bucket, and the disk is the root's,
/// which holds the transfers in progress.
pub fn report(layout: &Layout, s3: Option<&S3>, snapshot: Snapshot) -> NodeReport {
    let (classes, (history_objects, history_bytes)) = match s3 {
        None => (usage(layout), layout.history().usage()),
        Some(s3) => {
            let counted = s3.usage().and_then(|c| Ok((c, s3.history_usage()?)));
            counted.unwrap_or_else(|e| {
                tracing::warn!(
                    backend = s3.url(),
                    "cannot count what the bucket holds: {e}"
                );
                (Vec::new(), (0, 0))
            })
        }
    };
    let disk = disk::space::of(layout.root()).map(|(free, total)| DiskSpace { free, total });
    let disk = disk.unwrap_or_else(|e| {
        tracing::warn!(root = %layout.root().display(), "cannot read the free space: {e}");
        DiskSpace::default()
    });
    NodeReport {
        history_objects,
        history_bytes,
        version: SOFTWARE_VERSION.to_string(),
        uptime: snapshot.uptime,
        root: layout.root().display().to_string(),
        backend: s3.map(|s3| s3.url().to_string()),
        files: classes.iter().map(|c| c.files).sum(),
        bytes: classes.iter().map(|c| c.bytes).sum(),
        classes,
        disk,
        uploads: snapshot.uploads,
        reads: snapshot.reads,
        routes: snapshot.routes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_and_bytes_per_class() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let _lock = layout.prepare(true).unwrap();
        std::fs::create_dir_all(dir.path().join("mp3/a/b")).unwrap();
        std::fs::write(dir.path().join("mp3/a/b/x.mp3"), b"12345").unwrap();
        std::fs::write(dir.path().join("mp3/y.mp3"), b"1").unwrap();
        std::fs::write(dir.path().join("others/z"), b"").unwrap();
        // uploads in progress are not stored files
        std::fs::write(dir.path().join(".dfs/tmp/1.part"), b"123").unwrap();
        let snapshot = Snapshot {
            uploads: 1,
            reads: 2,
            uptime: 3,
            routes: schema::Routes::default().table(),
        };
        let r = report(&layout, None, snapshot);
        assert_eq!((r.files, r.bytes), (3, 6));
        let per: Vec<(Class, u64, u64)> = r
            .classes
            .iter()
            .map(|c| (c.class, c.files, c.bytes))
            .collect();
        assert_eq!(
            per,
            [
                (Class::Mp3, 2, 6),
                (Class::Txt, 0, 0),
                (Class::Pdf, 0, 0),
                (Class::Others, 1, 0)
            ]
        );
        assert_eq!((r.uploads, r.reads, r.uptime), (1, 2, 3));
        assert!(r.disk.total > 0);
    }
}
