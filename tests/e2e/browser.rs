//! `dfs web` in a real browser: a headless Chromium driven through chromedriver (the W3C
//! WebDriver protocol, tests/e2e/webdriver.rs) browses the stored tree, searches through the
//! page's form, opens a file's history and downloads an old version (checked byte for byte in
//! the browser's download folder), and watches the health page's plots refresh without a
//! reload; a name holding markup shows as text and runs nothing.
//!
//! Skipped (saying why) without `/usr/bin/chromedriver` and `/usr/bin/chromium` (Debian
//! packages `chromium-driver` and `chromium`). Screenshots of each page go to
//! `target/web-screenshots/` for a person to look at.

use crate::harness::*;
use crate::web::{Web, SYNC};
use crate::webdriver::{no_browser, Driver, Element, ENTER};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a page or an element may take to show.
const SHOW: Duration = Duration::from_secs(30);
/// How often a condition in the browser is looked at (each look is a WebDriver call).
const POLL: Duration = Duration::from_millis(100);

macro_rules! skip_without_browser {
    () => {
        if let Some(why) = no_browser() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Where the screenshots go: `target/web-screenshots/` of this crate.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-screenshots")
}

/// Saves a screenshot of the page as `target/web-screenshots/NAME.png` and says where; it must
/// be a PNG of more than 5 KB (a blank page compresses to far less).
fn save_screenshot(d: &Driver, name: &str) -> PathBuf {
    let png = d.screenshot();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the {name} screenshot is no PNG"
    );
    assert!(
        png.len() > 5_000,
        "the {name} screenshot is only {} bytes: a blank page?",
        png.len()
    );
    let dir = screenshot_dir();
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    fs::write(&path, &png).unwrap();
    eprintln!(
        "screenshot of {name}: {} ({} bytes)",
        path.display(),
        png.len()
    );
    path
}

/// No alert is open: asking for its text fails with `no such alert`.
fn assert_no_alert(d: &Driver, page: &str) {
    match d.alert_text() {
        Ok(text) => panic!("an alert is open on {page}: {text:?}"),
        Err(e) => assert_eq!(e.error, "no such alert", "{page}: {e}"),
    }
}

/// The rendered texts of the elements matching `css`.
fn texts(d: &Driver, css: &str) -> Vec<String> {
    d.find_all(css).iter().map(|e| d.text(e)).collect()
}

/// The row of `#TABLE tr.CLASS` whose text holds `needle`.
fn row_with(d: &Driver, table: &str, class: &str, needle: &str) -> Option<Element> {
    d.find_all(&format!("#{table} tr.{class}"))
        .into_iter()
        .find(|r| d.text(r).contains(needle))
}

/// The files in `dir` that are complete downloads (no `.crdownload` or other partial file).
fn downloads_in(dir: &Path) -> (BTreeMap<String, Vec<u8>>, bool) {
    let mut done = BTreeMap::new();
    let mut partial = false;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".crdownload") || name.starts_with(".com.google.Chrome") {
            partial = true;
        } else if let Ok(bytes) = fs::read(e.path()) {
            done.insert(name, bytes);
        }
    }
    (done, partial)
}

#[test]
fn a_browser_browses_searches_downloads_an_old_version_and_sees_the_plots_refresh() {
    skip_without_browser!();
    let c = Cluster::start();
    // `<script>alert(1)</script>.txt` is the file `script>.txt` in the folder
    // `<script>alert(1)<` (a name's `/` separates folders); `img_name` is markup in one name.
    let script_name = "<script>alert(1)</script>.txt";
    let img_name = "<img src=x onerror=alert(1)>.txt";
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, name) in [
        script_name,
        img_name,
        "docs/report.pdf",
        "music/report.mp3",
        "music/song.mp3",
        "été/日本.mp3",
    ]
    .into_iter()
    .enumerate()
    {
        files.insert(name.into(), random_bytes(i as u64 + 1, 1_000 + i * 500));
    }
    write_files(&c.source, &files);
    let notes = c.source.join("notes.txt");
    let v1 = b"version one of the notes\n".to_vec();
    let v2 = b"version two of the notes, longer than the first\n".to_vec();
    fs::write(&notes, &v1).unwrap();
    c.wait_synced(SYNC);
    let _ = instant_between();
    fs::write(&notes, &v2).unwrap();
    wait_until("notes.txt v2 is stored", SYNC, || {
        listed_version(&c, "notes.txt") == Some(2)
    });
    let web = Web::start(&c, &[]);
    let work = c.dir.path().join("browser");
    let downloads = work.join("downloads");
    let d = Driver::start(&work, &downloads);

    // Browse: the root's names, the markup one as plain text, and no script ran.
    d.goto(&web.url("/browse/"));
    d.wait_for("#entries", SHOW);
    d.wait_loaded(SHOW);
    assert_no_alert(&d, "/browse/");
    let rows = texts(&d, "#entries tr");
    for name in [
        "<script>alert(1)</",
        img_name,
        "notes.txt",
        "docs",
        "music",
        "été",
    ] {
        assert!(
            rows.iter().any(|r| r.contains(name)),
            "/browse/ shows no {name:?}: {rows:?}"
        );
    }
    let script_row = row_with(&d, "entries", "dir", "<script>")
        .unwrap_or_else(|| panic!("no row shows <script> as text: {rows:?}"));
    assert!(d.text(&script_row).contains("<script>alert(1)</"));
    assert!(
        row_with(&d, "entries", "file", img_name).is_some(),
        "no row shows {img_name:?} as text: {rows:?}"
    );
    assert!(
        d.find("#entries script").is_none() && d.find("#entries img").is_none(),
        "markup of a name became an element"
    );
    save_screenshot(&d, "browse");

    // Search through the page's form: type, press Enter, see the results.
    let q = d.wait_for("form#search input#q", SHOW);
    d.send_keys(&q, "report");
    d.send_keys(&q, ENTER);
    wait_every("the search results show", SHOW, POLL, || {
        d.current_url().contains("/search?") && d.find("#results").is_some()
    });
    d.wait_loaded(SHOW);
    assert!(d.current_url().contains("q=report"), "{}", d.current_url());
    let mut found = texts(&d, "#results tr.file");
    found.sort();
    assert_eq!(found.len(), 2, "two results: {found:?}");
    assert!(found[0].contains("docs/report.pdf"), "{found:?}");
    assert!(found[1].contains("music/report.mp3"), "{found:?}");
    save_screenshot(&d, "search");
    // The markup name found by search is text too.
    let q = d.wait_for("form#search input#q", SHOW);
    d.clear(&q);
    d.send_keys(&q, "script");
    d.send_keys(&q, ENTER);
    wait_every("the search for script shows", SHOW, POLL, || {
        d.current_url().contains("q=script") && d.find("#results").is_some()
    });
    d.wait_loaded(SHOW);
    assert_no_alert(&d, "/search?q=script");
    assert!(
        row_with(&d, "results", "file", script_name).is_some(),
        "{:?}",
        texts(&d, "#results tr")
    );

    // History: from the listing, click notes.txt's history link; two versions, newest first.
    d.goto(&web.url("/browse/"));
    d.wait_for("#entries", SHOW);
    let row = row_with(&d, "entries", "file", "notes.txt").expect("a row for notes.txt");
    let link = d.find_in(&row, "a.history");
    assert_eq!(link.len(), 1, "one history link in the notes.txt row");
    d.click(&link[0]);
    wait_every("the history page of notes.txt shows", SHOW, POLL, || {
        d.current_url().contains("/history/notes.txt")
            && d.find_all("#versions tr.version").len() == 2
    });
    d.wait_loaded(SHOW);
    let numbers: Vec<String> = d
        .find_all("#versions tr.version td.v")
        .iter()
        .map(|e| d.text(e).trim().to_string())
        .collect();
    assert_eq!(numbers, ["2", "1"], "newest first");
    save_screenshot(&d, "history");

    // Download version 1 by its link: it lands in the download folder with v1's bytes.
    let v1_row = d
        .find_all("#versions tr.version")
        .into_iter()
        .find(|r| {
            d.find_in(r, "td.v")
                .first()
                .is_some_and(|v| d.text(v).trim() == "1")
        })
        .expect("the row of version 1");
    let download = d.find_in(&v1_row, "a.download");
    assert_eq!(download.len(), 1, "one download link in version 1's row");
    d.click(&download[0]);
    let mut last = (BTreeMap::new(), false);
    wait_every("version 1 is downloaded", SHOW, POLL, || {
        last = downloads_in(&downloads);
        !last.1 && !last.0.is_empty()
    });
    let (done, _) = last;
    assert_eq!(
        done.keys().collect::<Vec<_>>(),
        ["notes.txt"],
        "the download is named after the file"
    );
    assert_eq!(
        done["notes.txt"], v1,
        "the downloaded bytes are version 1's"
    );
    assert_no_alert(&d, "the history page");

    // Health: inline SVG plots, refreshed by the page's script without a reload.
    d.goto(&web.url("/health"));
    d.wait_for("#plots svg", SHOW);
    d.wait_loaded(SHOW);
    let plots = d.find_all("#plots svg").len();
    assert!(plots >= 4, "{plots} plots on /health");
    d.execute("window.__dfsNotReloaded = 'still the same page'; return true");
    let updated = |d: &Driver| {
        d.find("#plots")
            .and_then(|p| d.attribute(&p, "data-updated"))
    };
    let first = updated(&d);
    wait_every(
        "the plots are refreshed (#plots data-updated changes)",
        SHOW,
        POLL,
        || {
            let now = updated(&d);
            now.is_some() && now != first
        },
    );
    eprintln!(
        "#plots data-updated went from {first:?} to {:?}",
        updated(&d)
    );
    assert!(
        d.find_all("#plots svg").len() >= 4,
        "the plots are still there after the refresh"
    );
    assert_eq!(
        d.execute("return window.__dfsNotReloaded || null"),
        "still the same page",
        "the page was reloaded instead of refreshed"
    );
    assert_no_alert(&d, "/health");
    save_screenshot(&d, "health");
}
