//! `dfs fetch` with no names: paging, the table and the JSON lines.

use super::{args, fetch, pattern, FakeBroker, FakeFile};
use schema::Hash;

fn store() -> Vec<FakeFile> {
    [
        "b.txt",
        "a.mp3",
        "music/c.pdf",
        "d",
        "e.txt",
        "f.txt",
        "g.txt",
    ]
    .iter()
    .enumerate()
    .map(|(i, n)| FakeFile::bytes(n, pattern(i * 1000)))
    .collect()
}

#[test]
fn lists_every_page_as_a_table_sorted_by_name() {
    let broker = FakeBroker::start(store(), 3);
    let dir = tempfile::tempdir().unwrap();
    let out = fetch(&args(broker.port, dir.path(), &[]));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert!(lines[0].starts_with("NAME"), "{text}");
    assert!(lines[0].ends_with("SIZE  CLASS   MODIFIED"), "{text}");
    let names: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "a.mp3",
            "b.txt",
            "d",
            "e.txt",
            "f.txt",
            "g.txt",
            "music/c.pdf"
        ]
    );
    // 7 entries in pages of 3.
    assert_eq!(broker.stats.lock().unwrap().lists, 3);
    // Listing writes nothing to the target.
    assert_eq!(super::tree(dir.path()), Vec::<String>::new());
}

#[test]
fn table_columns_are_aligned_within_a_page() {
    let broker = FakeBroker::start(store(), 10);
    let dir = tempfile::tempdir().unwrap();
    let out = fetch(&args(broker.port, dir.path(), &[]));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "NAME            SIZE  CLASS   MODIFIED");
    assert_eq!(
        lines[1],
        "a.mp3         1000 B  mp3     2020-09-13T12:26:40Z"
    );
    assert_eq!(
        lines[2],
        "b.txt            0 B  txt     2020-09-13T12:26:40Z"
    );
    assert_eq!(
        lines[3],
        "d            2.9 KiB  others  2020-09-13T12:26:40Z"
    );
    assert_eq!(
        lines[7],
        "music/c.pdf  2.0 KiB  pdf     2020-09-13T12:26:40Z"
    );
}

#[test]
fn class_keeps_the_rows_of_one_class() {
    let broker = FakeBroker::start(store(), 2);
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(broker.port, dir.path(), &[]);
    a.json = true;
    a.class = Some(schema::Class::Txt);
    let out = fetch(&a);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["b.txt", "e.txt", "f.txt", "g.txt"]);
}

#[test]
fn lists_json_lines_with_every_field() {
    let broker = FakeBroker::start(store(), 2);
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(broker.port, dir.path(), &[]);
    a.json = true;
    let out = fetch(&a);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 7);
    let first = &rows[0];
    assert_eq!(first["name"], "a.mp3");
    assert_eq!(first["size"], 1000);
    assert_eq!(first["class"], "mp3");
    assert_eq!(first["blake3"], Hash::of(&pattern(1000)).to_hex());
    assert_eq!(first["modified"], "2020-09-13T12:26:40.123456789Z");
    assert_eq!(first["version"], 1);
    assert_eq!(rows[6]["class"], "pdf");
    // 7 entries in pages of 2.
    assert_eq!(broker.stats.lock().unwrap().lists, 4);
}

#[test]
fn follows_full_pages_to_the_end() {
    // Pages of 2,000 entries are about 260 KiB each: far over MAX_HEADER, within MAX_FRAME.
    let files: Vec<FakeFile> = (0..6000)
        .map(|i| FakeFile::bytes(&format!("some/folder/file-{i:06}.txt"), Vec::new()))
        .collect();
    let broker = FakeBroker::start(files, 2000);
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(broker.port, dir.path(), &[]);
    a.json = true;
    let out = fetch(&a);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 6000);
    assert_eq!(broker.stats.lock().unwrap().lists, 3);
}

#[test]
fn an_empty_store_lists_only_the_header() {
    let broker = FakeBroker::start(Vec::new(), 3);
    let dir = tempfile::tempdir().unwrap();
    let out = fetch(&args(broker.port, dir.path(), &[]));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "NAME  SIZE  CLASS   MODIFIED\n"
    );
}
