//! The HTML of every page, built with `maud`: every value put into a page is escaped by the
//! template itself, so a stored name such as `<script>` is shown, never run. No page loads
//! anything from elsewhere: the style and the script are served from `/assets/`.

use crate::health::Series;
use crate::snapshot::Row;
use crate::url::{encode, encode_name};
use fetcher::human::Size;
use maud::{html, Markup, DOCTYPE};
use schema::{Entry, VersionInfo};
use serde_json::Value;

/// Rows on one page of a folder or of search results.
pub const PAGE: usize = 500;

fn time(ns: i64) -> String {
    schema::time::rfc3339(ns)
}

/// The query suffix that keeps an instant (`?at=…` or `&at=…`), or nothing.
fn at_query(at: Option<&str>, first: bool) -> String {
    match at {
        Some(t) => format!("{}at={}", if first { '?' } else { '&' }, encode(t)),
        None => String::new(),
    }
}

/// The frame of every page: the title, the navigation with search and the instant picker.
pub fn layout(title: &str, at: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · dfs" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                nav {
                    a.brand href="/browse/" { "dfs" }
                    a href={ "/browse/" (at_query(at, true)) } { "Browse" }
                    a href="/health" { "Health" }
                    form #search action="/search" method="get" {
                        input #q name="q" type="search" placeholder="Search names or globs (**/*.pdf)";
                        @if let Some(t) = at { input type="hidden" name="at" value=(t); }
                        button type="submit" { "Search" }
                    }
                    form #at action="/browse/" method="get" {
                        input name="at" type="text" value=[at] placeholder="As of: 2026-12-01T09:00:00Z or 2h";
                        button type="submit" { "Show" }
                        @if at.is_some() { a href="/browse/" { "Now" } }
                    }
                }
                @if let Some(t) = at {
                    p.instant { "The store as it was at " strong { (t) } " (deleted files included)." }
                }
                main { (body) }
            }
        }
    }
}

/// A folder's page.
pub fn folder(
    folder: &str,
    at: Option<&str>,
    rows: &[Row<'_>],
    next: Option<&str>,
    (files, bytes): (usize, u64),
) -> Markup {
    let title = if folder.is_empty() { "/" } else { folder };
    let body = html! {
        h1 { (crumbs(folder, at)) }
        p.summary {
            (files) " files, " (Size(bytes).to_string()) " in the store"
            @if at.is_some() { " then" }
            " · "
            a #archive href={ "/archive/" (encode_name(folder)) (at_query(at, true)) } { "Download this folder (.tar)" }
        }
        (entries_table("entries", folder, at, rows))
        @if let Some(n) = next {
            a #next href={ "/browse/" (encode_name(folder)) "?after=" (encode(n)) (at_query(at, false)) } { "Next page →" }
        }
    };
    layout(title, at, body)
}

fn crumbs(folder: &str, at: Option<&str>) -> Markup {
    let mut parts = Vec::new();
    let mut path = String::new();
    for part in folder.split('/').filter(|p| !p.is_empty()) {
        path.push_str(part);
        path.push('/');
        parts.push((part, path.clone()));
    }
    html! {
        a href={ "/browse/" (at_query(at, true)) } { "/" }
        @for (part, path) in &parts {
            " " a href={ "/browse/" (encode_name(path)) (at_query(at, true)) } { (part) "/" }
        }
    }
}

fn entries_table(id: &str, folder: &str, at: Option<&str>, rows: &[Row<'_>]) -> Markup {
    html! {
        table id=(id) {
            thead { tr { th { "Name" } th { "Size" } th { "Class" } th { "Modified" } th { "Version" } th {} } }
            tbody {
                @for row in rows {
                    @match row {
                        Row::Dir { name, path, files } => {
                            tr.dir {
                                td.name { a href={ "/browse/" (encode_name(path)) (at_query(at, true)) } { (name) "/" } }
                                td.size {} td { (files) @if *files == 1 { " file" } @else { " files" } } td {} td {} td {}
                            }
                        }
                        Row::File(e) => { (file_row(e, &e.name[folder.len()..], at)) }
                    }
                }
            }
        }
    }
}

fn file_row(e: &Entry, shown: &str, at: Option<&str>) -> Markup {
    let name = encode_name(&e.name);
    let download = if at.is_some() {
        format!("/download/{name}?version={}", e.version)
    } else {
        format!("/download/{name}")
    };
    html! {
        tr.file {
            td.name { a.download href=(download) { (shown) } }
            td.size title=(Size(e.size).to_string()) { (e.size) }
            td.class { (e.class.to_string()) }
            td.modified { (time(e.modified)) }
            td.v { (e.version) }
            td { a.history href={ "/history/" (name) } { "history" } " " a.download href=(download) { "download" } }
        }
    }
}

/// The search results.
pub fn search(query: &str, at: Option<&str>, hits: &[&Entry], next: Option<&str>) -> Markup {
    let body = html! {
        h1 { "Search: " (query) }
        p.summary { (hits.len()) @if next.is_some() { "+" } " matches" }
        table #results {
            thead { tr { th { "Name" } th { "Size" } th { "Class" } th { "Modified" } th { "Version" } th {} } }
            tbody { @for e in hits { (file_row(e, &e.name, at)) } }
        }
        @if let Some(n) = next {
            a #next href={ "/search?q=" (encode(query)) "&after=" (encode(n)) (at_query(at, false)) } { "Next page →" }
        }
    };
    layout("Search", at, body)
}

/// A file's history: every retained version, newest first.
pub fn history(name: &str, versions: &[VersionInfo]) -> Markup {
    let url = encode_name(name);
    let body = html! {
        h1 { "History of " (name) }
        table #versions {
            thead { tr { th { "Version" } th { "Size" } th { "Modified" } th { "Current from" } th { "Until" } th { "State" } th { "BLAKE3" } th {} } }
            tbody {
                @for v in versions.iter().rev() {
                    tr.version {
                        td.v { (v.version) }
                        td.size title=(Size(v.size).to_string()) { (v.size) }
                        td { (time(v.modified)) }
                        td { @if v.since > 0 { (time(v.since)) } }
                        td { @if let Some(u) = v.until { (time(u)) } }
                        td.state { (fetcher::history::state(v)) }
                        td.hash { code { (v.blake3.to_string()) } }
                        td { a.download href={ "/download/" (url) "?version=" (v.version) } { "download" } }
                    }
                }
            }
        }
    };
    layout(name, None, body)
}

/// The health page: the facts, then the plots, both refreshed by the page's script.
pub fn health(latest: &Value, series: &[Series]) -> Markup {
    let body = html! {
        h1 { "Health" }
        div #facts { (facts(latest)) }
        h2 { "What moved (since this page's server started; every 5 s)" }
        div #plots data-updated="0" { (plots(series)) }
    };
    layout("Health", None, body)
}

/// The facts of the health page: broker, nodes, watchers, problems.
pub fn facts(v: &Value) -> Markup {
    let b = &v["broker"];
    let up = |x: &Value| x.as_bool().unwrap_or(false);
    let num = |x: &Value| x.as_u64().unwrap_or(0);
    let alarms: Vec<&str> = v["alarms"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // An alarm is also one of `dfs status`'s problems: it is shown once, as the alarm.
    let problems: Vec<&str> = v["problems"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !alarms.iter().any(|a| p.ends_with(a)))
        .collect();
    html! {
        @if problems.is_empty() && alarms.is_empty() && up(&b["reachable"]) {
            p.ok { "Everything is up." }
        }
        @for p in &problems { p.problem { (p) } }
        @for a in &alarms {
            p.alarm { "Alarm: " (a) ". Someone should look; “As of” above shows the files as they were before." }
        }
        table #status {
            tr { th { "Broker" } td { (b["address"].as_str().unwrap_or("?")) } td.state { @if up(&b["reachable"]) { "up" } @else { "down" } } }
            @for n in v["storage_nodes"].as_array().into_iter().flatten() {
                tr.node { th { "Storage node" } td { (n["address"].as_str().unwrap_or("?")) } td.state { @if up(&n["reachable"]) { "up" } @else { "down" } } }
            }
            tr { th { "Stored" } td { (num(&v["files"])) " files" } td { (Size(num(&v["bytes"])).to_string()) } }
            tr { th { "History" } td { (num(&v["storage"]["history_objects"])) " kept contents" } td { (Size(num(&v["storage"]["history_bytes"])).to_string()) } }
            @for w in v["watchers"].as_array().into_iter().flatten() {
                tr.watcher {
                    th { "Watcher" }
                    td { (w["source"].as_str().or(w["file"].as_str()).unwrap_or("?")) }
                    td.state { @if w["healthy"].as_bool().unwrap_or(false) { "healthy" } @else { "problem" } }
                }
            }
        }
        p.sampled { "As of " (v["sampled"].as_str().unwrap_or("")) }
    }
}

/// The plots, as inline SVG.
pub fn plots(series: &[Series]) -> Markup {
    html! { @for s in series { (plot(s)) } }
}

fn plot(s: &Series) -> Markup {
    const W: f64 = 560.0;
    const H: f64 = 140.0;
    const PAD: f64 = 36.0;
    let max = s.points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let (t0, t1) = match (s.points.first(), s.points.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (a.0, b.0),
        (Some(a), _) => (a.0 - 60.0, a.0),
        _ => (0.0, 1.0),
    };
    let scale = if max > 0.0 { max } else { 1.0 };
    let pts: Vec<String> = s
        .points
        .iter()
        .map(|(t, y)| {
            let x = PAD + (t - t0) / (t1 - t0) * (W - PAD - 8.0);
            let y = H - 18.0 - y / scale * (H - 36.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let top = if s.unit.starts_with('B') {
        format!("{}{}", Size(max as u64), &s.unit[1..])
    } else {
        format!("{max:.1} {}", s.unit)
    };
    html! {
        figure.plot {
            figcaption { (s.title) }
            svg viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H) role="img" aria-label=(s.title) {
                line x1=(PAD) y1=(H - 18.0) x2=(W - 8.0) y2=(H - 18.0) stroke="#999" {}
                line x1=(PAD) y1="18" x2=(PAD) y2=(H - 18.0) stroke="#999" {}
                text x="2" y="14" font-size="11" fill="#555" { (top) }
                @if let (Some(first), Some(last)) = (s.points.first(), s.points.last()) {
                    text x=(PAD) y=(H - 4.0) font-size="11" fill="#555" { (clock(first.0)) }
                    text x=(W - 8.0) y=(H - 4.0) font-size="11" fill="#555" text-anchor="end" { (clock(last.0)) " UTC" }
                }
                @if pts.is_empty() {
                    text x=(W / 2.0 - 40.0) y=(H / 2.0) font-size="12" fill="#777" { "no data yet" }
                } @else {
                    polyline points=(pts.join(" ")) fill="none" stroke="#2a6fdb" stroke-width="2" {}
                }
            }
        }
    }
}

/// `HH:MM:SS` of a time in seconds since the epoch.
fn clock(t: f64) -> String {
    let secs = t.max(0.0) as u64;
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// The login form.
pub fn login(wrong: bool) -> Markup {
    let body = html! {
        h1 { "Access token" }
        @if wrong { p.problem { "That is not the token." } }
        form #login method="post" action="/login" {
            label { "Token " input name="token" type="password" autofocus; }
            button type="submit" { "Enter" }
        }
    };
    layout("Log in", None, body)
}

/// An error page.
pub fn error(title: &str, why: &str) -> Markup {
    layout(title, None, html! { h1 { (title) } p.problem { (why) } })
}
