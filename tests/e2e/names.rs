//! Names with tabs, newlines and other control characters: stored under their exact names,
//! listed, fetched back byte for byte, and escaped in index.txt so that it keeps one line per
//! file.

use crate::harness::*;
use schema::names::{escape, unescape};
use std::collections::BTreeMap;
use std::time::Duration;

/// File names (relative, `/`-separated) holding every kind of control character a name may
/// hold, in file names and in folder names.
const NAMES: &[&str] = &[
    "plain.txt",
    "tab\there.txt",
    "new\nline.txt",
    "carriage\rreturn.pdf",
    "bell\u{7}escape\u{1b}del\u{7f}.bin",
    "next\u{85}line c1.mp3",
    "folder\twith\ttabs/in\nside.mp3",
    "many\n\n\nnewlines/\u{1}\u{2}\u{3}",
];

#[test]
fn names_with_tabs_newlines_and_control_characters_are_stored_listed_fetched_and_escaped() {
    let c = Cluster::start();
    let mut want = BTreeMap::new();
    for (i, name) in NAMES.iter().enumerate() {
        let path = c.source.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let content = format!("content {i} of {name:?}\n");
        std::fs::write(&path, &content).unwrap();
        want.insert(name.to_string(), content);
    }
    // Listing, node folders (under the exact names) and source agree.
    c.wait_synced(Duration::from_secs(120));

    // index.txt: the header, then one line per file, each with six tab-separated columns, the
    // names escaped (no control character left) and in name order.
    wait_until(
        "index.txt lists every file",
        Duration::from_secs(30),
        || c.index_txt().lines().count() == NAMES.len() + 1,
    );
    let text = c.index_txt();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with('#'), "{text}");
    let mut indexed = Vec::new();
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 6, "broken line {line:?} in:\n{text}");
        assert!(
            !cols.iter().any(|col| col.chars().any(char::is_control)),
            "{line:?}"
        );
        let name = unescape(cols[0]).unwrap_or_else(|| panic!("bad escape in {line:?}"));
        assert_eq!(cols[0], escape(&name));
        assert_eq!(cols[2], want[&name].len().to_string(), "size of {name:?}");
        indexed.push(name);
    }
    let mut sorted = indexed.clone();
    sorted.sort();
    assert_eq!(indexed, sorted, "index.txt is not in name order");
    assert_eq!(indexed, want.keys().cloned().collect::<Vec<_>>());

    // The human listing escapes them too: one row per file.
    let out = c.fetch(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        !table.chars().any(|ch| ch.is_control() && ch != '\n'),
        "{table}"
    );
    for name in NAMES {
        let rows = table
            .lines()
            .filter(|l| l.starts_with(&escape(name)))
            .count();
        assert_eq!(rows, 1, "rows for {name:?} in:\n{table}");
    }

    // Fetched back by their exact names, byte for byte.
    let target = c.target.display().to_string();
    let mut args = vec!["--target", target.as_str()];
    args.extend(NAMES);
    let out = c.fetch(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, content) in &want {
        let got = std::fs::read_to_string(c.target.join(name))
            .unwrap_or_else(|e| panic!("fetched {name:?}: {e}"));
        assert_eq!(&got, content, "{name:?}");
    }
}
