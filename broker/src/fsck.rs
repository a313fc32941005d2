//! The comparison behind `dfs fsck`, shared by the running broker (`fsck_relay`) and the
//! offline command (the `fsck` crate): each file of the node's `checked` pages is judged against the
//! index, the names never seen on the node are missing, and a repair makes the index agree
//! with what the node holds, never adopting bytes that do not match their recorded hash.
//!
//! Memory: the names seen on the node are kept until the end (to find the missing ones), about
//! one name's bytes per stored file.

use crate::error::IndexError;
use crate::index::Index;
use crate::record::Record;
use schema::{names, CheckedFile, Finding, FindingKind};
use std::collections::HashSet;

/// Most findings in one `findings` page.
pub const FINDINGS_PAGE: usize = 1000;

/// Files asked for in one `check` page.
pub const CHECK_LIMIT: u32 = 256;

/// Progress of one comparison.
#[derive(Debug, Default)]
pub struct Audit {
    seen: HashSet<String>,
    /// Node files compared so far.
    pub checked: u64,
    /// Kept versions checked so far.
    pub kept: u64,
}

impl Audit {
    /// Records that `name` needs no verdict about being missing (seen on the node, or changed
    /// by an upload while the comparison runs).
    pub fn saw(&mut self, name: &str) {
        self.seen.insert(name.to_string());
    }

    /// Judges one file the node holds; `None` when it agrees with the index.
    pub fn judge(
        &mut self,
        index: &Index,
        file: &CheckedFile,
    ) -> Result<Option<Finding>, IndexError> {
        let name = &file.entry.name;
        self.checked += 1;
        self.saw(name);
        if names::check(name).is_err() {
            return Ok(None);
        }
        let indexed = index.get(name)?.map(|r| r.blake3);
        let kind = if !file.is_intact() {
            FindingKind::Corrupt
        } else if indexed.is_none() {
            FindingKind::Extra
        } else if indexed != Some(file.entry.blake3) {
            FindingKind::Differs
        } else {
            return Ok(None);
        };
        Ok(Some(Finding {
            name: name.clone(),
            kind,
            indexed,
            stored: Some(file.entry.blake3),
            content: file.content,
            repaired: false,
            note: file.reason.clone(),
        }))
    }

    /// The indexed names never seen on the node, in name order (`skip` says which to leave
    /// out, such as names changing right now).
    pub fn missing(
        &self,
        index: &Index,
        skip: impl Fn(&str) -> bool,
    ) -> Result<Vec<Finding>, IndexError> {
        let mut out = Vec::new();
        for entry in index.entries() {
            let entry = entry?;
            if self.seen.contains(&entry.name) || skip(&entry.name) {
                continue;
            }
            out.push(Finding {
                name: entry.name,
                kind: FindingKind::Missing,
                indexed: Some(entry.blake3),
                stored: None,
                content: None,
                repaired: false,
                note: None,
            });
        }
        Ok(out)
    }
}

/// Repairs `finding` in the index, for every kind but `corrupt` (whose file must first be set
/// aside on the node, then [`forget`] removes its name): a missing name is removed, an intact
/// extra file adopted, a differing entry replaced by the node's.
pub fn repair_index(
    index: &Index,
    finding: &mut Finding,
    file: Option<&CheckedFile>,
) -> Result<(), IndexError> {
    match (finding.kind, file) {
        (FindingKind::Missing, _) => {
            index.remove(&finding.name)?;
            finding.note = Some("removed from the index".into());
        }
        (FindingKind::Extra | FindingKind::Differs, Some(f)) if f.is_intact() => {
            index.put(&finding.name, &Record::from_entry(&f.entry))?;
            finding.note = Some("the index now records the node's copy".into());
        }
        _ => return Ok(()),
    }
    finding.repaired = true;
    Ok(())
}

/// After the node set aside a corrupt file: its name leaves the index, so the watcher sends it
/// again from the source.
pub fn forget(index: &Index, finding: &mut Finding) -> Result<(), IndexError> {
    if finding.indexed.is_some() {
        index.remove(&finding.name)?;
    }
    finding.repaired = true;
    finding.note =
        Some("set aside on the node (.dfs/quarantine) and removed from the index".into());
    Ok(())
}

/// Judges one version the node's history keeps; `None` when its content is whole. Nothing can
/// repair one (the history holds the only copy of a replaced version): the finding says so.
pub fn judge_kept(audit: &mut Audit, file: &CheckedFile) -> Option<Finding> {
    audit.kept += 1;
    let kind = match file.content {
        Some(h) if h == file.entry.blake3 => return None,
        Some(_) => FindingKind::KeptCorrupt,
        None => FindingKind::KeptMissing,
    };
    let version = format!("version {}", file.entry.version);
    let note = match &file.reason {
        Some(why) => format!("{version}: {why}"),
        None => format!("{version}: the history holds no other copy"),
    };
    Some(Finding {
        name: file.entry.name.clone(),
        kind,
        indexed: None,
        stored: Some(file.entry.blake3),
        content: file.content,
        repaired: false,
        note: Some(note),
    })
}

/// One report line for `finding`.
pub fn line(f: &Finding) -> String {
    let hex = |h: &Option<schema::Hash>| h.map_or_else(|| "-".to_string(), |h| h.to_hex());
    let name = names::escape(&f.name);
    let what = match f.kind {
        FindingKind::Missing => format!("indexed ({}) but not on the node", hex(&f.indexed)),
        FindingKind::Extra => format!("on the node ({}) but not indexed", hex(&f.stored)),
        FindingKind::Corrupt => match f.content {
            Some(_) => format!(
                "content hashes to {}, recorded {}",
                hex(&f.content),
                hex(&f.stored)
            ),
            None => "content cannot be read".to_string(),
        },
        FindingKind::Differs => format!(
            "the index records {}, the node {}",
            hex(&f.indexed),
            hex(&f.stored)
        ),
        FindingKind::KeptMissing => format!("a kept version ({}) has no content", hex(&f.stored)),
        FindingKind::KeptCorrupt => format!(
            "a kept version hashes to {}, recorded {}",
            hex(&f.content),
            hex(&f.stored)
        ),
        FindingKind::Unknown => "unknown finding".to_string(),
    };
    let mut s = format!("{:<8} {name}: {what}", f.kind.as_str());
    match (&f.note, f.repaired) {
        (Some(note), true) => s.push_str(&format!("; repaired: {note}")),
        (Some(note), false) => s.push_str(&format!("; {note}")),
        (None, _) => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{Class, Entry, Hash};

    fn file(name: &str, recorded: &[u8], content: &[u8]) -> CheckedFile {
        CheckedFile {
            entry: Entry {
                name: name.into(),
                class: Class::Txt,
                size: content.len() as u64,
                blake3: Hash::of(recorded),
                modified: 0,
                version: 1,
            },
            content: Some(Hash::of(content)),
            reason: None,
        }
    }

    #[test]
    fn judges_and_repairs_each_kind() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = Index::open(&dir.path().join("db")).unwrap();
        let rec = |b: &[u8]| Record::stored(Class::Txt, b.len() as u64, Hash::of(b), 0, 1);
        index.put("ok.txt", &rec(b"ok")).unwrap();
        index.put("bad.txt", &rec(b"bad")).unwrap();
        index.put("gone.txt", &rec(b"gone")).unwrap();
        index.put("old.txt", &rec(b"old")).unwrap();
        let mut audit = Audit::default();
        let ok = file("ok.txt", b"ok", b"ok");
        let bad = file("bad.txt", b"bad", b"BAD");
        let new = file("new.txt", b"new", b"new");
        let old = file("old.txt", b"newer", b"newer");
        assert_eq!(audit.judge(&index, &ok).unwrap(), None);
        let kinds: Vec<FindingKind> = [&bad, &new, &old]
            .iter()
            .map(|f| audit.judge(&index, f).unwrap().unwrap().kind)
            .collect();
        assert_eq!(
            kinds,
            [
                FindingKind::Corrupt,
                FindingKind::Extra,
                FindingKind::Differs
            ]
        );
        let missing = audit.missing(&index, |_| false).unwrap();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].name, "gone.txt");
        assert!(line(&missing[0]).starts_with("missing  gone.txt: indexed"));

        let mut m = missing[0].clone();
        repair_index(&index, &mut m, None).unwrap();
        assert!(m.repaired && index.get("gone.txt").unwrap().is_none());
        let mut e = audit.judge(&index, &new).unwrap().unwrap();
        repair_index(&index, &mut e, Some(&new)).unwrap();
        assert_eq!(
            index.get("new.txt").unwrap().unwrap().blake3,
            Hash::of(b"new")
        );
        let mut c = audit.judge(&index, &bad).unwrap().unwrap();
        repair_index(&index, &mut c, Some(&bad)).unwrap();
        assert!(!c.repaired, "corrupt bytes are never adopted");
        assert_eq!(
            index.get("bad.txt").unwrap().unwrap().blake3,
            Hash::of(b"bad")
        );
        forget(&index, &mut c).unwrap();
        assert!(index.get("bad.txt").unwrap().is_none());
        let mut d = audit.judge(&index, &old).unwrap().unwrap();
        repair_index(&index, &mut d, Some(&old)).unwrap();
        assert_eq!(audit.judge(&index, &old).unwrap(), None);
    }
}
