//! `dfs web`: the read-only web page over the broker's fetch port, tested over HTTP (no
//! browser; tests/e2e/browser.rs drives a real one). Listing in pages of 500, search by
//! substring and glob, history and downloads of any version, downloads verified against their
//! BLAKE3 before a byte is sent, folders as tar archives now and as of an instant, the health
//! page and its JSON (also with the broker down), the token and login cookie beyond loopback,
//! every changing method refused, and names HTML-escaped.
//!
//! Every request goes through an agent with 30 s timeouts, every wait is polled with a
//! deadline, and every process stops when its guard drops.

use crate::harness::*;
use crate::recovery::corrupt_in_place;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub const SYNC: Duration = Duration::from_secs(120);
/// The longest any one HTTP request may take (connect, send, answer and body).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the page may take to show a change stored (it lists the store again every 3 s).
const SHOW: Duration = Duration::from_secs(30);
/// How many rows a page holds at most.
const PAGE: usize = 500;

// ----- HTTP -----

/// An HTTP agent that never follows redirects, never turns a status into an error, and gives
/// up on any request after [`HTTP_TIMEOUT`].
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// One answer, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header `name` (case-insensitive).
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A short description for failure messages (status, headers, the start of the body).
    pub fn show(&self) -> String {
        let text = self.text();
        let cut: String = text.chars().take(2000).collect();
        format!("{} {:?}\n{cut}", self.status, self.headers)
    }
}

/// Sends `method URL` with `headers` and, for POST, PUT and PATCH, `body`; reads the whole
/// answer. A request that cannot be made at all (refused, timed out) is an `Err`.
pub fn try_request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    macro_rules! with_headers {
        ($b:expr) => {{
            let mut b = $b;
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b
        }};
    }
    let res = match method {
        "GET" => with_headers!(agent.get(url)).call(),
        "HEAD" => with_headers!(agent.head(url)).call(),
        "DELETE" => with_headers!(agent.delete(url)).call(),
        "OPTIONS" => with_headers!(agent.options(url)).call(),
        "POST" => with_headers!(agent.post(url)).send(body),
        "PUT" => with_headers!(agent.put(url)).send(body),
        "PATCH" => with_headers!(agent.patch(url)).send(body),
        other => panic!("no such method in this test: {other}"),
    };
    let mut res = res.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = if method == "HEAD" {
        Vec::new()
    } else {
        res.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .map_err(|e| format!("{method} {url}: reading the body: {e}"))?
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// The percent-encoding of one name component: every byte but the unreserved `A-Za-z0-9-._~`.
pub fn enc(component: &str) -> String {
    let mut out = String::new();
    for b in component.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A stored name (or folder) as a URL path: each component percent-encoded, `/` kept.
pub fn enc_path(name: &str) -> String {
    name.split('/').map(enc).collect::<Vec<_>>().join("/")
}

/// Percent-decoding (`+` left alone: it is a plus in a path).
pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| panic!("{s:?} decodes to no UTF-8: {e}"))
}

/// The path of `href` decoded, and its query (raw), split at `?`.
pub fn split_href(href: &str) -> (String, String) {
    match href.split_once('?') {
        Some((p, q)) => (pct_decode(p), q.to_string()),
        None => (pct_decode(href), String::new()),
    }
}

/// The value of `key` in the query string `query` (decoded, `+` as space).
pub fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| pct_decode(&v.replace('+', " ")))
}

// ----- A tiny HTML reader: enough for the pages' tables and links -----

/// `&lt;` `&gt;` `&amp;` `&quot;` `&apos;` `&#NN;` `&#xHH;` (and `&nbsp;`) back to text.
pub fn unescape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest[..rest.len().min(12)].find(';');
        let decoded = end.and_then(|e| {
            let ent = &rest[1..e];
            let ch = match ent {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ if ent.starts_with("#x") || ent.starts_with("#X") => {
                    u32::from_str_radix(&ent[2..], 16)
                        .ok()
                        .and_then(char::from_u32)
                }
                _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            ch.map(|c| (c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The attributes of the start tag `tag` (`<a class="x" href='y' hidden>`), values unescaped.
pub fn attrs(tag: &str) -> BTreeMap<String, String> {
    let inner = tag
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim_end_matches('/');
    let b = inner.as_bytes();
    let mut i = inner.find(|c: char| c.is_whitespace()).unwrap_or(b.len());
    let mut out = BTreeMap::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            return out;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' {
            i += 1;
        }
        let name = inner[start..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                let vs = i + 1;
                let ve = inner[vs..].find(q as char).map_or(b.len(), |e| vs + e);
                i = (ve + 1).min(b.len());
                &inner[vs..ve]
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                &inner[vs..i]
            };
            out.insert(name, unescape_html(value));
        } else {
            out.insert(name, String::new());
        }
    }
}

/// Whether the class attribute of `a` holds `class`.
pub fn has_class(a: &BTreeMap<String, String>, class: &str) -> bool {
    a.get("class")
        .is_some_and(|c| c.split_whitespace().any(|x| x == class))
}

/// Every start tag `<NAME ...>` in `html`, with its byte offset.
pub fn start_tags<'a>(html: &'a str, name: &str) -> Vec<(usize, &'a str)> {
    let open = format!("<{name}");
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = lower[from..].find(&open) {
        let at = from + i;
        let after = lower.as_bytes().get(at + open.len()).copied();
        from = at + open.len();
        if !matches!(after, Some(b' ' | b'>' | b'\t' | b'\n' | b'\r' | b'/')) {
            continue;
        }
        let Some(end) = html[at..].find('>') else {
            break;
        };
        out.push((at, &html[at..at + end + 1]));
    }
    out
}

/// Text content: tags dropped, entities unescaped.
pub fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for ch in html.chars() {
        match ch {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape_html(&out)
}

/// A link: its attributes and its text.
#[derive(Debug, Clone)]
pub struct Link {
    pub attrs: BTreeMap<String, String>,
    pub text: String,
}

impl Link {
    pub fn href(&self) -> &str {
        self.attrs.get("href").map_or("", |h| h.as_str())
    }
}

/// Every `<a ...>TEXT</a>` in `html`.
pub fn links(html: &str) -> Vec<Link> {
    let lower = html.to_ascii_lowercase();
    start_tags(html, "a")
        .into_iter()
        .map(|(at, tag)| {
            let body_start = at + tag.len();
            let body_end = lower[body_start..]
                .find("</a>")
                .map_or(html.len(), |e| body_start + e);
            Link {
                attrs: attrs(tag),
                text: strip_tags(&html[body_start..body_end]),
            }
        })
        .collect()
}

/// The element `<TAG ... id="ID" ...>...</TAG>` (not nested in one of its kind), whole.
pub fn element_by_id<'a>(html: &'a str, tag: &str, id: &str) -> Option<&'a str> {
    let lower = html.to_ascii_lowercase();
    let close = format!("</{tag}>");
    start_tags(html, tag)
        .into_iter()
        .find(|(_, t)| attrs(t).get("id").map(|s| s.as_str()) == Some(id))
        .map(|(at, t)| {
            let end = lower[at + t.len()..]
                .find(&close)
                .map_or(html.len(), |e| at + t.len() + e + close.len());
            &html[at..end]
        })
}

/// One `<tr>` of a table.
#[derive(Debug, Clone)]
pub struct Row {
    pub attrs: BTreeMap<String, String>,
    pub inner: String,
}

impl Row {
    pub fn is(&self, class: &str) -> bool {
        has_class(&self.attrs, class)
    }

    pub fn links(&self) -> Vec<Link> {
        links(&self.inner)
    }

    /// The link with class `class` (`history`, `download`).
    pub fn link(&self, class: &str) -> Option<Link> {
        self.links()
            .into_iter()
            .find(|l| has_class(&l.attrs, class))
    }

    /// The name link: the link in the row's `td.name` cell, else its first link that is not
    /// a history or archive link.
    pub fn name_link(&self) -> Link {
        let lower = self.inner.to_ascii_lowercase();
        let in_name_cell = start_tags(&self.inner, "td")
            .into_iter()
            .find(|(_, t)| has_class(&attrs(t), "name"))
            .and_then(|(at, t)| {
                let s = at + t.len();
                let e = lower[s..].find("</td>").map_or(self.inner.len(), |e| s + e);
                links(&self.inner[s..e]).into_iter().next()
            });
        in_name_cell
            .or_else(|| {
                self.links().into_iter().find(|l| {
                    !["history", "archive"]
                        .iter()
                        .any(|c| has_class(&l.attrs, c))
                })
            })
            .unwrap_or_else(|| panic!("no name link in row {}", self.inner))
    }

    /// The name the row shows (a folder's without a trailing `/`).
    pub fn name(&self) -> String {
        let t = self.name_link().text;
        if self.is("dir") {
            t.strip_suffix('/').unwrap_or(&t).to_string()
        } else {
            t
        }
    }

    /// The text of the cell `<td class="CLASS">`, trimmed.
    pub fn cell(&self, class: &str) -> Option<String> {
        let lower = self.inner.to_ascii_lowercase();
        start_tags(&self.inner, "td")
            .into_iter()
            .find(|(_, t)| has_class(&attrs(t), class))
            .map(|(at, t)| {
                let s = at + t.len();
                let e = lower[s..].find("</td>").map_or(self.inner.len(), |e| s + e);
                strip_tags(&self.inner[s..e]).trim().to_string()
            })
    }

    pub fn text(&self) -> String {
        strip_tags(&self.inner)
    }
}

/// The rows of `<table id="ID">` (empty when the page has no such table).
pub fn rows(html: &str, table_id: &str) -> Vec<Row> {
    let Some(table) = element_by_id(html, "table", table_id) else {
        return Vec::new();
    };
    let lower = table.to_ascii_lowercase();
    start_tags(table, "tr")
        .into_iter()
        .map(|(at, t)| {
            let s = at + t.len();
            let e = lower[s..].find("</tr>").map_or(table.len(), |e| s + e);
            Row {
                attrs: attrs(t),
                inner: table[s..e].to_string(),
            }
        })
        .filter(|r| r.is("file") || r.is("dir") || r.is("version"))
        .collect()
}

/// The `href` of the link with id `id`, if the page has one.
pub fn link_by_id(html: &str, id: &str) -> Option<String> {
    links(html)
        .into_iter()
        .find(|l| l.attrs.get("id").map(|s| s.as_str()) == Some(id))
        .map(|l| l.href().to_string())
}

/// Asserts that a page loads nothing from elsewhere: no `src` or `href` to `http(s)://` or
/// `//host`, no CSS `url(http...)` or `@import`.
pub fn assert_self_contained(html: &str, what: &str) {
    for (tag, a) in ["a", "link", "script", "img", "iframe", "form", "source"]
        .iter()
        .flat_map(|t| start_tags(html, t).into_iter().map(|(_, s)| (*t, attrs(s))))
    {
        for key in ["src", "href", "action"] {
            if let Some(v) = a.get(key) {
                let v = v.trim().to_ascii_lowercase();
                assert!(
                    !(v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//")),
                    "{what}: <{tag} {key}={v:?}> points elsewhere"
                );
            }
        }
    }
    let lower = html.to_ascii_lowercase();
    for bad in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "url(http",
        "url(\"http",
        "url('http",
        "@import",
    ] {
        assert!(!lower.contains(bad), "{what}: the page holds {bad:?}");
    }
}

// ----- The web process -----

/// A running `dfs web` and an agent to ask it; the process stops when dropped.
pub struct Web {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The address the ready file gave.
    pub listen: String,
    pub agent: ureq::Agent,
    /// The `Cookie` header sent with every request, once logged in.
    pub cookie: Option<String>,
}

impl Web {
    /// `dfs web --listen 127.0.0.1:0 --broker <c's fetch port> --timeout 10 EXTRA...`.
    pub fn start(c: &Cluster, extra: &[&str]) -> Web {
        Web::start_on(c, "web", "127.0.0.1:0", extra)
    }

    /// `dfs web --listen LISTEN ...`, logging to DIR/NAME.log; waits for its ready file.
    pub fn start_on(c: &Cluster, name: &str, listen: &str, extra: &[&str]) -> Web {
        let dir = c.dir.path();
        let ready = dir.join(format!("{name}.ready"));
        let _ = fs::remove_file(&ready);
        let mut args: Vec<String> = vec![
            "web".into(),
            "--listen".into(),
            listen.into(),
            "--broker".into(),
            c.broker_addr(),
            "--ready-file".into(),
            ready.display().to_string(),
        ];
        if !extra.contains(&"--timeout") {
            args.extend(["--timeout".into(), "10".into()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut proc = Proc::spawn(name, dir, dir, &args);
        let v = proc.wait_ready(&ready);
        assert_eq!(v["role"], "web", "ready file {v}");
        let listen = v["listen"]
            .as_str()
            .unwrap_or_else(|| panic!("ready file {v} has no listen"))
            .to_string();
        let port: u16 = listen
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("ready file {v}: bad listen address"));
        assert_ne!(port, 0, "ready file {v} gives the bound port");
        Web {
            proc,
            base: format!("http://127.0.0.1:{port}"),
            listen,
            agent: agent(),
            cookie: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `METHOD PATH` (with the login cookie, if any); fails the test if no answer comes.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        self.request_with(method, path, &[], body)
    }

    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(c) = &self.cookie {
            all.push(("Cookie", c));
        }
        try_request(&self.agent, method, &self.url(path), &all, body)
            .unwrap_or_else(|e| panic!("{e}\n----- web log -----\n{}", self.proc.log_text()))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, b"")
    }

    /// `GET PATH`, following up to three redirects on this server (as a browser would: an
    /// instant given as an age is answered with the page of the instant it means).
    pub fn get_followed(&self, path: &str) -> (String, Resp) {
        let mut path = path.to_string();
        for _ in 0..3 {
            let r = self.get(&path);
            if !matches!(r.status, 301 | 302 | 303 | 307 | 308) {
                return (path, r);
            }
            let to = r
                .header("location")
                .unwrap_or_else(|| panic!("GET {path}: a redirect without Location: {}", r.show()));
            path = resolve(&path, to);
        }
        panic!("GET {path}: more than three redirects");
    }

    /// `GET PATH`, which must answer 200 with a self-contained HTML page; its text.
    pub fn page(&self, path: &str) -> String {
        let (path, r) = self.get_followed(path);
        let path = path.as_str();
        assert_eq!(r.status, 200, "GET {path}: {}", r.show());
        let ct = r.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("text/html"),
            "GET {path}: content type {ct:?}"
        );
        let html = String::from_utf8(r.body).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_self_contained(&html, path);
        html
    }

    /// `GET PATH`, which must answer 200; the body.
    pub fn bytes(&self, path: &str) -> Vec<u8> {
        let (path, r) = self.get_followed(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.show());
        r.body
    }

    /// `GET /api/health` as JSON.
    pub fn health(&self) -> serde_json::Value {
        let r = self.get("/api/health");
        assert_eq!(r.status, 200, "GET /api/health: {}", r.show());
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("/api/health is no JSON ({e}): {}", r.show()))
    }

    /// Every row of a paged table from `first` on, following `#next` (at most `max_pages`);
    /// returns the rows of each page.
    pub fn pages(&self, first: &str, table: &str, max_pages: usize) -> Vec<Vec<Row>> {
        let mut out = Vec::new();
        let mut path = first.to_string();
        loop {
            let html = self.page(&path);
            out.push(rows(&html, table));
            let Some(next) = link_by_id(&html, "next") else {
                return out;
            };
            assert!(
                out.len() < max_pages,
                "more than {max_pages} pages from {first}"
            );
            path = resolve(&path, &next);
        }
    }
}

/// `href` as a path on the server, relative to the page at `page` (a query alone, a path, or
/// a whole URL on the same server).
pub fn resolve(page: &str, href: &str) -> String {
    if let Some(q) = href.strip_prefix('?') {
        format!("{}?{q}", page.split('?').next().unwrap())
    } else if href.starts_with('/') {
        href.to_string()
    } else if let Some(rest) = href.strip_prefix("http://") {
        rest.find('/').map_or("/".into(), |i| rest[i..].to_string())
    } else {
        let dir = &page[..page.split('?').next().unwrap().rfind('/').unwrap() + 1];
        format!("{dir}{href}")
    }
}

fn names(rows: &[Row]) -> Vec<String> {
    rows.iter().map(Row::name).collect()
}

/// The full names a search finds (every page).
fn search(web: &Web, q: &str, extra: &str) -> Vec<String> {
    let path = format!("/search?q={}{extra}", enc(q));
    let pages = web.pages(&path, "results", 10);
    let all: Vec<Row> = pages.into_iter().flatten().collect();
    for r in &all {
        assert!(
            r.is("file"),
            "q={q}: a result row that is not a file: {r:?}"
        );
    }
    names(&all)
}

fn set_mtime(path: &Path, secs: u64) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// The regular files of a tar archive: path → (bytes, mtime).
fn untar(body: &[u8]) -> BTreeMap<String, (Vec<u8>, u64)> {
    use std::io::Read;
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(body);
    for e in ar.entries().expect("a tar archive") {
        let mut e = e.expect("a tar entry");
        let kind = e.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        assert!(kind.is_file(), "an entry of type {kind:?}");
        let path = e.path().unwrap().to_str().unwrap().to_string();
        let path = path.strip_prefix("./").unwrap_or(&path).to_string();
        let mtime = e.header().mtime().unwrap();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        assert!(
            out.insert(path.clone(), (bytes, mtime)).is_none(),
            "{path} twice in the archive"
        );
    }
    out
}

fn mtime_secs(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ----- Tests -----

/// 1,200 files in one folder come in three pages of at most 500 rows through `#next`, every
/// name exactly once and in order, each with its size and its history and download links; a
/// search matching them all pages the same way; folders and files are mixed in name order.
#[test]
fn a_folder_of_1200_files_is_listed_and_searched_in_pages_of_500() {
    let mut c = Cluster::start_without_watcher();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..1200 {
        files.insert(
            format!("many/f{i:04}.txt"),
            format!("file {i}\n").into_bytes(),
        );
    }
    for (name, text) in [
        ("a.txt", "a"),
        ("b/inner.txt", "inner"),
        ("c.txt", "cc"),
        ("d/e/deep.txt", "deep"),
    ] {
        files.insert(name.into(), text.as_bytes().to_vec());
    }
    write_files(&c.source, &files);
    c.start_watcher();
    c.wait_synced(SYNC);
    let web = Web::start(&c, &[]);

    // `/` sends the browser to the root folder.
    let r = web.get("/");
    assert_eq!(r.status, 303, "GET /: {}", r.show());
    assert_eq!(
        r.header("location").map(|l| resolve("/", l)),
        Some("/browse/".into())
    );

    // The root: folders and files mixed in name order, files with their sizes and links.
    let html = web.page("/browse/");
    let root = rows(&html, "entries");
    let shown: Vec<(String, bool)> = root.iter().map(|r| (r.name(), r.is("dir"))).collect();
    assert_eq!(
        shown,
        [
            ("a.txt".to_string(), false),
            ("b".into(), true),
            ("c.txt".into(), false),
            ("d".into(), true),
            ("many".into(), true)
        ],
        "{html}"
    );
    for r in root.iter().filter(|r| r.is("dir")) {
        let (path, _) = split_href(r.name_link().href());
        assert_eq!(path, format!("/browse/{}/", r.name()), "{r:?}");
    }
    let c_row = &root[2];
    assert_eq!(c_row.cell("size").as_deref(), Some("2"), "{c_row:?}");
    assert_eq!(web.bytes(c_row.link("download").unwrap().href()), b"cc");
    let archive = link_by_id(&html, "archive").expect("the root has an archive link");
    assert_eq!(split_href(&archive).0, "/archive/");
    // A folder two levels down, reached through its link.
    let d = web.page(&resolve("/browse/", root[3].name_link().href()));
    let d_rows = rows(&d, "entries");
    assert_eq!(names(&d_rows), ["e"]);
    let e = web.page(&resolve("/browse/d/", d_rows[0].name_link().href()));
    assert_eq!(names(&rows(&e, "entries")), ["deep.txt"]);

    // `many/`: 500, 500 and 200 rows.
    let pages = web.pages("/browse/many/", "entries", 10);
    let counts: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(counts, [PAGE, PAGE, 200], "rows per page");
    let all: Vec<&Row> = pages.iter().flatten().collect();
    let seen: Vec<String> = all.iter().map(|r| r.name()).collect();
    let want: Vec<String> = (0..1200).map(|i| format!("f{i:04}.txt")).collect();
    assert_eq!(seen, want, "every name once, in name order");
    for r in &all {
        let name = format!("many/{}", r.name());
        assert!(r.is("file"), "{r:?}");
        assert_eq!(
            r.cell("size"),
            Some(files[&name].len().to_string()),
            "size of {name}"
        );
        let history = r
            .link("history")
            .unwrap_or_else(|| panic!("{name}: no history link"));
        assert_eq!(split_href(history.href()).0, format!("/history/{name}"));
        let download = r
            .link("download")
            .unwrap_or_else(|| panic!("{name}: no download link"));
        assert_eq!(split_href(download.href()).0, format!("/download/{name}"));
    }
    // A link of the last page works.
    let last = pages[2].last().unwrap();
    assert_eq!(
        web.bytes(last.link("download").unwrap().href()),
        files["many/f1199.txt"]
    );

    // A search that matches all 1,200 pages the same way, full names as link text.
    let pages = web.pages(&format!("/search?q={}", enc("many/f")), "results", 10);
    let counts: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(counts, [PAGE, PAGE, 200], "search rows per page");
    let found: Vec<String> = names(&pages.concat());
    let want_full: Vec<String> = want.iter().map(|n| format!("many/{n}")).collect();
    assert_eq!(found, want_full, "every match once, in name order");
    // Globs: whole names, `?` one character, `*` within a folder.
    assert_eq!(search(&web, "many/f11*.txt", "").len(), 100);
    assert_eq!(
        search(&web, "many/f000?.txt", ""),
        (0..10)
            .map(|i| format!("many/f000{i}.txt"))
            .collect::<Vec<_>>()
    );
    assert_eq!(search(&web, "*.txt", ""), ["a.txt", "c.txt"]);
}

/// Search: a case-insensitive substring of the name, or a glob over whole names (`*` within a
/// folder, `**` across them); with `at`, what existed then.
#[test]
fn search_finds_substrings_case_insensitively_and_globs_over_whole_names() {
    let c = Cluster::start();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, name) in [
        "docs/Report-2024.pdf",
        "docs/old/report-1999.txt",
        "REPORTER.bin",
        "music/a.mp3",
        "music/live/b.mp3",
        "top.mp3",
        "notes.txt",
    ]
    .into_iter()
    .enumerate()
    {
        files.insert(name.into(), random_bytes(i as u64 + 1, 100 + i * 37));
    }
    write_files(&c.source, &files);
    c.wait_synced(SYNC);
    let t = instant_between();
    fs::write(c.source.join("late-report.txt"), "late").unwrap();
    wait_until("late-report.txt is stored", SYNC, || {
        listed_version(&c, "late-report.txt") == Some(1)
    });
    let web = Web::start(&c, &[]);

    let set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<String>>();
    let want = |v: &[&str]| {
        v.iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<String>>()
    };
    let reports = [
        "REPORTER.bin",
        "docs/Report-2024.pdf",
        "docs/old/report-1999.txt",
        "late-report.txt",
    ];
    assert_eq!(set(search(&web, "report", "")), want(&reports));
    assert_eq!(set(search(&web, "RePoRt", "")), want(&reports));
    assert_eq!(set(search(&web, "live/", "")), want(&["music/live/b.mp3"]));
    assert_eq!(set(search(&web, "*.mp3", "")), want(&["top.mp3"]));
    assert_eq!(
        set(search(&web, "**/*.mp3", "")),
        want(&["music/a.mp3", "music/live/b.mp3", "top.mp3"])
    );
    assert_eq!(set(search(&web, "music/*.mp3", "")), want(&["music/a.mp3"]));
    assert_eq!(
        set(search(&web, "docs/**", "")),
        want(&["docs/Report-2024.pdf", "docs/old/report-1999.txt"])
    );
    assert_eq!(set(search(&web, "?otes.txt", "")), want(&["notes.txt"]));
    assert_eq!(
        set(search(&web, "[nt]o*", "")),
        want(&["notes.txt", "top.mp3"])
    );
    // A glob is matched against the whole name, not a part of it.
    assert!(search(&web, "*.mp", "").is_empty());
    assert!(search(&web, "no such thing", "").is_empty());
    // As of an instant before late-report.txt was stored.
    let at = format!("&at={}", enc(&t));
    assert_eq!(
        set(search(&web, "report", &at)),
        want(&reports[..3]),
        "search at {t}"
    );

    // A result's links work: its download gives its bytes.
    let html = web.page(&format!("/search?q={}", enc("report-1999")));
    let found = rows(&html, "results");
    assert_eq!(names(&found), ["docs/old/report-1999.txt"]);
    let link = found[0].link("download").expect("a download link");
    assert_eq!(web.bytes(link.href()), files["docs/old/report-1999.txt"]);
    assert_eq!(
        found[0].cell("size"),
        Some(files["docs/old/report-1999.txt"].len().to_string())
    );
}

/// History: every retained version newest first with its number, size, state and BLAKE3; each
/// version downloads byte for byte by `?version=N` and by `?at=TIME`; browsing as of an instant
/// shows and downloads the version current then; a deleted name keeps its history.
#[test]
fn history_lists_every_version_and_each_downloads_byte_for_byte() {
    let c = Cluster::start();
    let file = c.source.join("notes.txt");
    let v1 = random_bytes(11, 1_500);
    let v2 = random_bytes(12, 2_700);
    fs::write(c.source.join("other.txt"), "other").unwrap();
    fs::write(&file, &v1).unwrap();
    wait_until("v1 is stored", SYNC, || {
        listed_version(&c, "notes.txt") == Some(1)
    });
    let t1 = instant_between();
    fs::write(&file, &v2).unwrap();
    wait_until("v2 is stored", SYNC, || {
        listed_version(&c, "notes.txt") == Some(2)
    });
    let web = Web::start(&c, &[]);

    let html = web.page("/history/notes.txt");
    let versions = rows(&html, "versions");
    let nums: Vec<Option<String>> = versions.iter().map(|r| r.cell("v")).collect();
    assert_eq!(nums, [Some("2".into()), Some("1".into())], "{html}");
    for (r, (bytes, state)) in versions.iter().zip([(&v2, "current"), (&v1, "replaced")]) {
        let text = r.text();
        assert!(text.contains(state), "state {state} in {text:?}");
        let hex = blake3::hash(bytes).to_hex().to_string();
        assert!(text.contains(&hex), "BLAKE3 {hex} in {text:?}");
        assert!(
            text.contains(&bytes.len().to_string()),
            "size {} in {text:?}",
            bytes.len()
        );
        let link = r.link("download").expect("a download link per version");
        let (path, query) = split_href(link.href());
        let n = r.cell("v").unwrap();
        assert_eq!(path, "/download/notes.txt");
        assert_eq!(query_value(&query, "version"), Some(n.clone()));
        let got = web.get(link.href());
        assert_eq!(got.status, 200, "version {n}: {}", got.show());
        assert_eq!(&got.body, bytes, "version {n}");
    }

    // By number, by instant and now.
    assert_eq!(web.bytes("/download/notes.txt?version=1"), v1);
    assert_eq!(web.bytes("/download/notes.txt?version=2"), v2);
    assert_eq!(
        web.bytes(&format!("/download/notes.txt?at={}", enc(&t1))),
        v1
    );
    assert_eq!(web.bytes("/download/notes.txt"), v2);
    assert_eq!(web.get("/download/notes.txt?version=9").status, 404);
    // An age: an hour ago nothing was stored.
    let (_, r) = web.get_followed("/download/notes.txt?at=1h");
    assert_eq!(r.status, 404, "{}", r.show());

    // Browsing as of t1: v1's size and a download of version 1.
    let past = web.page(&format!("/browse/?at={}", enc(&t1)));
    let row = rows(&past, "entries")
        .into_iter()
        .find(|r| r.name() == "notes.txt")
        .expect("notes.txt as of t1");
    assert_eq!(row.cell("size"), Some(v1.len().to_string()));
    let link = row.link("download").unwrap();
    let (path, query) = split_href(link.href());
    assert_eq!(path, "/download/notes.txt");
    assert_eq!(
        query_value(&query, "version").as_deref(),
        Some("1"),
        "{query}"
    );
    assert_eq!(web.bytes(link.href()), v1);

    // Unknown names: 404 pages.
    for path in ["/history/nope.txt", "/download/nope.txt", "/browse/nope/"] {
        let r = web.get(path);
        assert_eq!(r.status, 404, "GET {path}: {}", r.show());
    }

    // Deleted: gone from the listing and the download, kept in the history.
    fs::remove_file(&file).unwrap();
    wait_until("the delete is synced", SYNC, || {
        !c.listing().contains_key("notes.txt")
    });
    // The page lists the store again every few seconds.
    wait_until("/browse/ no longer shows notes.txt", SHOW, || {
        names(&rows(&web.page("/browse/"), "entries")) == ["other.txt"]
    });
    assert_eq!(web.get("/download/notes.txt").status, 404);
    let html = web.page("/history/notes.txt");
    let versions = rows(&html, "versions");
    let states: Vec<(Option<String>, Option<String>)> = versions
        .iter()
        .map(|r| (r.cell("v"), r.cell("state")))
        .collect();
    // The version current when the name was deleted is the one marked deleted.
    assert_eq!(
        states,
        [
            (Some("2".into()), Some("deleted".into())),
            (Some("1".into()), Some("replaced".into()))
        ],
        "{html}"
    );
    assert_eq!(web.bytes("/download/notes.txt?version=1"), v1);
    assert_eq!(
        web.bytes(&format!("/download/notes.txt?at={}", enc(&t1))),
        v1
    );
}

/// A file of 3 MiB downloads byte for byte, as an attachment under its last component; HEAD
/// answers without a body.
#[test]
fn a_3_mib_file_downloads_byte_for_byte_as_an_attachment() {
    let c = Cluster::start();
    let len = (3 << 20) + 5;
    let hex = write_big_file(&c.source.join("big/data.bin"), 41, len);
    c.wait_synced(SYNC);
    let web = Web::start(&c, &[]);
    let r = web.get("/download/big/data.bin");
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.body.len(), len);
    assert_eq!(blake3::hash(&r.body).to_hex().to_string(), hex);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let cd = r.header("content-disposition").unwrap_or("");
    assert!(cd.starts_with("attachment"), "{cd}");
    assert!(cd.contains("filename=\"data.bin\""), "{cd}");
    if let Some(cl) = r.header("content-length") {
        assert_eq!(cl, len.to_string());
    }
    let head = web.request("HEAD", "/download/big/data.bin", b"");
    assert_eq!(head.status, 200, "{}", head.show());
    assert_eq!(
        web.bytes("/download/big/data.bin?version=1").len(),
        len,
        "by version"
    );
    assert_eq!(web.get("/download/big/nope.bin").status, 404);
    assert_eq!(web.get("/download/big").status, 404, "a folder is no file");
    let mut web = web;
    assert_eq!(
        web.proc.stop_with(libc::SIGTERM, Duration::from_secs(10)),
        Some(0),
        "SIGTERM stops dfs web cleanly:\n{}",
        web.proc.log_text()
    );
}

/// A folder downloads as a tar archive of every file under it, paths relative to the folder,
/// exact bytes and mtimes; the root holds everything; `?at=T` gives the versions current then.
#[test]
fn folders_download_as_tar_archives_now_and_as_of_an_instant() {
    let mut c = Cluster::start_without_watcher();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert("a.txt".into(), b"top file".to_vec());
    files.insert("big/sub/x.mp3".into(), random_bytes(3, 20_000));
    files.insert("big/empty.txt".into(), Vec::new());
    files.insert("big/deep/er/still.pdf".into(), random_bytes(4, 7_777));
    files.insert("other/y.pdf".into(), random_bytes(5, 999));
    write_files(&c.source, &files);
    let big_hex = write_big_file(&c.source.join("big/three.bin"), 77, (3 << 20) + 1);
    for (i, name) in ["a.txt", "big/sub/x.mp3", "big/three.bin", "big/empty.txt"]
        .iter()
        .enumerate()
    {
        set_mtime(&c.source.join(name), 1_614_861_296 + i as u64 * 1000);
    }
    c.start_watcher();
    c.wait_synced(SYNC);
    let web = Web::start(&c, &[]);

    let check = |ar: &BTreeMap<String, (Vec<u8>, u64)>, folder: &str, what: &str| {
        let want: BTreeSet<String> = tree_hashes(&c.source.join(folder)).into_keys().collect();
        let got: BTreeSet<String> = ar.keys().cloned().collect();
        assert_eq!(got, want, "{what}: entries");
        for (path, (bytes, mtime)) in ar {
            let src = c.source.join(folder).join(path);
            assert_eq!(
                blake3::hash(bytes).to_hex().to_string(),
                file_hash(&src),
                "{what}: bytes of {path}"
            );
            assert_eq!(*mtime, mtime_secs(&src), "{what}: mtime of {path}");
        }
    };

    let html = web.page("/browse/big/");
    let href = link_by_id(&html, "archive").expect("an archive link on /browse/big/");
    assert_eq!(split_href(&href).0, "/archive/big/");
    let r = web.get(&href);
    assert_eq!(r.status, 200, "{}", r.show());
    assert_eq!(r.header("content-type"), Some("application/x-tar"));
    let big = untar(&r.body);
    check(&big, "big", "/archive/big/");
    assert_eq!(
        blake3::hash(&big["three.bin"].0).to_hex().to_string(),
        big_hex
    );
    assert_eq!(big["three.bin"].1, 1_614_861_296 + 2000);
    check(&untar(&web.bytes("/archive/")), "", "/archive/");
    check(
        &untar(&web.bytes("/archive/big/sub/")),
        "big/sub",
        "/archive/big/sub/",
    );
    assert_eq!(web.get("/archive/nope/").status, 404);

    // A new version and a new file; the archive as of before has the old ones only.
    let t = instant_between();
    let old_x = files["big/sub/x.mp3"].clone();
    let new_x = random_bytes(6, 33_333);
    fs::write(c.source.join("big/sub/x.mp3"), &new_x).unwrap();
    fs::write(c.source.join("big/new.txt"), "new").unwrap();
    c.wait_synced(SYNC);
    let mut now = BTreeMap::new();
    wait_until("/archive/big/ holds the new version", SHOW, || {
        now = untar(&web.bytes("/archive/big/"));
        now.contains_key("new.txt")
    });
    check(&now, "big", "/archive/big/ after the change");
    assert_eq!(now["sub/x.mp3"].0, new_x);

    let past_html = web.page(&format!("/browse/big/?at={}", enc(&t)));
    let href = link_by_id(&past_html, "archive").expect("an archive link as of t");
    let (path, query) = split_href(&href);
    assert_eq!(path, "/archive/big/");
    assert!(
        query_value(&query, "at").is_some(),
        "the archive link keeps at: {href}"
    );
    let past = untar(&web.bytes(&resolve("/browse/big/", &href)));
    let past_names: BTreeSet<&str> = past.keys().map(|s| s.as_str()).collect();
    assert_eq!(
        past_names,
        BTreeSet::from(["deep/er/still.pdf", "empty.txt", "sub/x.mp3", "three.bin"])
    );
    assert_eq!(past["sub/x.mp3"].0, old_x, "the version current at {t}");
    assert_eq!(past["sub/x.mp3"].1, 1_614_861_296 + 1000);
    assert_eq!(
        blake3::hash(&past["three.bin"].0).to_hex().to_string(),
        big_hex
    );
    let direct = untar(&web.bytes(&format!("/archive/big/?at={}", enc(&t))));
    assert_eq!(
        direct.keys().collect::<Vec<_>>(),
        past.keys().collect::<Vec<_>>()
    );
}

/// Beyond loopback without `--token-file`, `dfs web` refuses to start (exit 2, one line naming
/// the option). With a token: every page sends to `/login` and the API answers 401 until the
/// token is posted; a wrong token gets 401 and no cookie; the right one a cookie that is
/// HttpOnly and SameSite=Strict, with which every page works.
#[test]
fn beyond_loopback_a_token_is_required_and_the_login_sets_a_strict_http_only_cookie() {
    let c = Cluster::start();
    fs::write(c.source.join("secret.txt"), "the secret bytes").unwrap();
    c.wait_synced(SYNC);

    let ready = c.dir.path().join("refused.ready");
    let mut cmd = Command::new(dfs_bin());
    cmd.args([
        "web",
        "--listen",
        "0.0.0.0:0",
        "--broker",
        &c.broker_addr(),
        "--ready-file",
        ready.to_str().unwrap(),
    ])
    .current_dir(c.dir.path());
    let out = run_command_bounded(cmd, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--token-file"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!ready.exists(), "a refused web page wrote its ready file");

    let token = "tok-8f3a1c9e5b7d4e2a";
    let token_file = c.dir.path().join("web.token");
    fs::write(&token_file, format!("{token}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();
    let tf = token_file.display().to_string();
    let mut web = Web::start_on(&c, "web", "0.0.0.0:0", &["--token-file", &tf]);
    assert!(web.listen.starts_with("0.0.0.0:"), "{}", web.listen);

    // Without the cookie: pages send to the login, the API answers 401, nothing leaks.
    for path in [
        "/browse/",
        "/download/secret.txt",
        "/history/secret.txt",
        "/archive/",
        "/search?q=secret",
        "/health",
    ] {
        let r = web.get(path);
        assert_eq!(r.status, 303, "GET {path} without a cookie: {}", r.show());
        let loc = r.header("location").unwrap_or("");
        assert_eq!(split_href(&resolve(path, loc)).0, "/login", "{path}: {loc}");
        assert!(!r.text().contains("the secret bytes"), "{path}");
    }
    for path in ["/api/health", "/api/plots"] {
        let r = web.get(path);
        assert_eq!(r.status, 401, "GET {path} without a cookie: {}", r.show());
    }

    // The login form.
    let html = web.page("/login");
    let form = start_tags(&html, "form")
        .into_iter()
        .map(|(_, t)| attrs(t))
        .find(|a| a.get("id").map(|s| s.as_str()) == Some("login"))
        .unwrap_or_else(|| panic!("no form#login: {html}"));
    assert_eq!(
        form.get("method").map(|m| m.to_ascii_lowercase()),
        Some("post".into())
    );
    assert_eq!(form.get("action").map(|s| s.as_str()), Some("/login"));
    assert!(
        start_tags(&html, "input").into_iter().any(|(_, t)| {
            let a = attrs(t);
            a.get("name").map(|s| s.as_str()) == Some("token")
                && a.get("type").map(|s| s.as_str()) == Some("password")
        }),
        "no password input named token: {html}"
    );

    let form_post = |web: &Web, body: &str| {
        web.request_with(
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
    };
    // A wrong token: 401 and no cookie.
    for wrong in [
        "token=tok-wrong".to_string(),
        "token=".into(),
        format!("token={token}x"),
    ] {
        let r = form_post(&web, &wrong);
        assert_eq!(r.status, 401, "{wrong}: {}", r.show());
        assert!(
            r.headers_named("set-cookie")
                .iter()
                .all(|c| !c.contains(token)),
            "{wrong}: {:?}",
            r.headers
        );
    }
    // The right one: a cookie, strict and out of reach of scripts.
    let r = form_post(&web, &format!("token={}", enc(token)));
    assert_eq!(r.status, 303, "{}", r.show());
    assert_eq!(
        r.header("location").map(|l| resolve("/login", l)),
        Some("/".into())
    );
    let set = r
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("dfs_token="))
        .unwrap_or_else(|| panic!("no dfs_token cookie: {:?}", r.headers))
        .to_string();
    let parts: Vec<String> = set
        .split(';')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    for want in ["httponly", "samesite=strict", "path=/"] {
        assert!(parts.iter().any(|p| p == want), "{want} in {set:?}");
    }
    let pair = set.split(';').next().unwrap().trim().to_string();
    assert!(pair.len() > "dfs_token=".len(), "{set}");

    // A forged cookie does not pass.
    web.cookie = Some("dfs_token=forged".into());
    assert_eq!(web.get("/browse/").status, 303);
    assert_eq!(web.get("/api/health").status, 401);

    web.cookie = Some(pair);
    let html = web.page("/browse/");
    assert_eq!(names(&rows(&html, "entries")), ["secret.txt"]);
    assert_eq!(web.bytes("/download/secret.txt"), b"the secret bytes");
    assert_eq!(web.health()["broker"]["reachable"], true);
    assert_eq!(
        names(&rows(&web.page("/search?q=secret"), "results")),
        ["secret.txt"]
    );
    web.page("/health");
}

/// Every method but GET and HEAD is refused with 405 on every route, and nothing changes: the
/// listing, the node's files and the downloaded bytes stay as they were.
#[test]
fn methods_other_than_get_and_head_are_refused_and_change_nothing() {
    let c = Cluster::start();
    fs::write(c.source.join("keep.txt"), "keep these bytes").unwrap();
    fs::create_dir_all(c.source.join("dir")).unwrap();
    fs::write(c.source.join("dir/inner.mp3"), random_bytes(1, 5_000)).unwrap();
    c.wait_synced(SYNC);
    let listing = c.listing();
    let node = c.node_files();
    let web = Web::start(&c, &[]);
    let before = web.page("/browse/");

    for (method, path) in [
        ("PUT", "/download/keep.txt"),
        ("POST", "/download/keep.txt"),
        ("DELETE", "/download/keep.txt"),
        ("PATCH", "/download/keep.txt"),
        ("PUT", "/download/new.txt"),
        ("POST", "/browse/"),
        ("DELETE", "/browse/dir/"),
        ("PUT", "/browse/dir/inner.mp3"),
        ("DELETE", "/history/keep.txt"),
        ("POST", "/archive/"),
        ("POST", "/search?q=keep"),
        ("PUT", "/api/health"),
        ("DELETE", "/"),
        ("OPTIONS", "/browse/"),
    ] {
        let r = web.request_with(
            method,
            path,
            &[("Content-Type", "application/octet-stream")],
            b"overwritten!",
        );
        assert_eq!(r.status, 405, "{method} {path}: {}", r.show());
    }
    let head = web.request("HEAD", "/download/keep.txt", b"");
    assert_eq!(head.status, 200, "{}", head.show());
    assert_eq!(web.request("HEAD", "/browse/", b"").status, 200);

    assert_eq!(c.listing(), listing, "the listing changed");
    assert_eq!(c.node_files(), node, "the node's files changed");
    assert_eq!(web.bytes("/download/keep.txt"), b"keep these bytes");
    assert_eq!(
        names(&rows(&web.page("/browse/"), "entries")),
        names(&rows(&before, "entries"))
    );
    assert!(!c.listing().contains_key("new.txt"));
}

/// Names with markup, quotes, `&`, a tab and non-ASCII are shown escaped on every page (the raw
/// `<script>` never appears), link back to themselves and download their bytes, with an ASCII
/// filename and a UTF-8 one in the attachment header.
#[test]
fn names_with_markup_quotes_and_non_ascii_are_escaped_and_download_their_bytes() {
    let c = Cluster::start();
    // `<script>alert(1)</script>.txt` holds a `/`: it is the file `script>.txt` in the folder
    // `<script>alert(1)<`. The `<img ...>` name is markup in one component.
    let names_in: [&str; 8] = [
        "<script>alert(1)</script>.txt",
        "<img src=x onerror=alert(1)>.txt",
        "say \"hi\".txt",
        "rock & roll.mp3",
        "tab\there.txt",
        "it's.pdf",
        "été/日本.mp3",
        "a<b>/c&d.txt",
    ];
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, n) in names_in.iter().enumerate() {
        files.insert(n.to_string(), format!("bytes of {n:?} #{i}\n").into_bytes());
    }
    write_files(&c.source, &files);
    c.wait_synced(SYNC);
    let web = Web::start(&c, &[]);
    let raw = "<script>alert(1)</script>";

    let root = web.page("/browse/");
    assert!(!root.contains(raw), "raw markup on /browse/:\n{root}");
    assert!(root.contains("&lt;script&gt;"), "{root}");
    assert!(!root.contains("rock & roll"), "a raw & on /browse/");
    assert!(!root.contains("a<b>"), "a raw a<b> on /browse/");
    assert!(!root.contains("<img"), "a raw <img on /browse/");
    assert!(
        !root.contains("<script>alert"),
        "a raw <script> on /browse/"
    );
    let shown: BTreeSet<String> = rows(&root, "entries").iter().map(Row::name).collect();
    let want: BTreeSet<String> = [
        "<script>alert(1)<",
        "<img src=x onerror=alert(1)>.txt",
        "say \"hi\".txt",
        "rock & roll.mp3",
        "tab\there.txt",
        "it's.pdf",
        "été",
        "a<b>",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(shown, want, "{root}");
    // Each file's links lead back to its exact name; each download gives its bytes.
    for r in rows(&root, "entries").iter().filter(|r| r.is("file")) {
        let name = r.name();
        let d = r.link("download").unwrap();
        assert_eq!(split_href(d.href()).0, format!("/download/{name}"));
        assert_eq!(web.bytes(d.href()), files[&name], "{name:?}");
        let h = r.link("history").unwrap();
        assert_eq!(split_href(h.href()).0, format!("/history/{name}"));
        let history = web.page(h.href());
        assert!(
            !history.contains(raw),
            "raw markup on the history of {name:?}"
        );
        assert_eq!(rows(&history, "versions").len(), 1, "{name:?}");
    }
    // Into the folders by their links.
    for (folder, child) in [
        ("été", "日本.mp3"),
        ("a<b>", "c&d.txt"),
        ("<script>alert(1)<", "script>.txt"),
    ] {
        let row = rows(&root, "entries")
            .into_iter()
            .find(|r| r.name() == folder)
            .unwrap();
        let href = row.name_link().href().to_string();
        assert_eq!(split_href(&href).0, format!("/browse/{folder}/"));
        let page = web.page(&resolve("/browse/", &href));
        assert!(
            !page.contains("a<b>") && !page.contains("<script>alert"),
            "raw markup in {folder}"
        );
        let inner = rows(&page, "entries");
        assert_eq!(names(&inner), [child]);
        let full = format!("{folder}/{child}");
        assert_eq!(
            web.bytes(inner[0].link("download").unwrap().href()),
            files[&full]
        );
    }
    // Every name downloads by its encoded path.
    for (name, bytes) in &files {
        let r = web.get(&format!("/download/{}", enc_path(name)));
        assert_eq!(r.status, 200, "{name:?}: {}", r.show());
        assert_eq!(&r.body, bytes, "{name:?}");
        let cd = r.header("content-disposition").unwrap_or("").to_string();
        assert!(cd.is_ascii(), "{name:?}: {cd}");
        let last = name.rsplit('/').next().unwrap();
        let star = cd
            .split(';')
            .map(str::trim)
            .find_map(|p| {
                p.strip_prefix("filename*=UTF-8''")
                    .or(p.strip_prefix("filename*=utf-8''"))
            })
            .unwrap_or_else(|| panic!("{name:?}: no filename*: {cd}"));
        assert_eq!(pct_decode(star), last, "{name:?}: {cd}");
        // The quoted fallback is well formed: it ends at an unescaped quote, then `;` or the end.
        let start = cd
            .find("filename=\"")
            .unwrap_or_else(|| panic!("{name:?}: no filename: {cd}"))
            + "filename=\"".len();
        let mut end = None;
        let b = cd.as_bytes();
        let mut i = start;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => {
                    end = Some(i);
                    break;
                }
                _ => i += 1,
            }
        }
        let end = end.unwrap_or_else(|| panic!("{name:?}: unterminated filename: {cd}"));
        let after = cd[end + 1..].trim_start();
        assert!(after.is_empty() || after.starts_with(';'), "{name:?}: {cd}");
        assert!(
            !cd[start..end].chars().any(|ch| ch.is_control()),
            "{name:?}: control characters in {cd:?}"
        );
    }
    // Search shows full names escaped, also when the query itself is markup.
    let find = |q: &str| {
        let html = web.page(&format!("/search?q={}", enc(q)));
        assert!(!html.contains(raw), "raw markup on the search for {q:?}");
        names(&rows(&html, "results"))
    };
    assert_eq!(find("script"), ["<script>alert(1)</script>.txt"]);
    assert_eq!(find(raw), ["<script>alert(1)</script>.txt"]);
    assert_eq!(find("onerror"), ["<img src=x onerror=alert(1)>.txt"]);
    assert_eq!(find("日本"), ["été/日本.mp3"]);
    assert_eq!(find("ROCK &"), ["rock & roll.mp3"]);
    assert_eq!(find("\"hi\""), ["say \"hi\".txt"]);
    assert_eq!(find("c&d"), ["a<b>/c&d.txt"]);
    let reflected = web.page(&format!("/search?q={}", enc("<script>alert(2)</script>")));
    assert!(
        !reflected.contains("<script>alert(2)"),
        "the query is reflected raw"
    );
    // The 404 page of an unknown name does not echo it raw.
    let r = web.get(&format!(
        "/history/{}",
        enc("<script>alert(3)</script>.txt")
    ));
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("<script>alert(3)"), "{}", r.show());
    let r = web.get(&format!(
        "/download/{}",
        enc("<script>alert(4)</script>.txt")
    ));
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("<script>alert(4)"), "{}", r.show());
}

/// A stored file whose bytes changed on the node is refused with 502 naming BLAKE3 before any
/// of its bytes is sent, small or large, current version or by number; an intact file still
/// downloads.
#[test]
fn a_corrupted_stored_file_is_refused_with_502_and_none_of_its_bytes() {
    let c = Cluster::start();
    let small = random_bytes(21, 200_000);
    fs::write(c.source.join("victim.txt"), &small).unwrap();
    let big_len = (5 << 20) + 123;
    write_big_file(&c.source.join("big.bin"), 22, big_len);
    let big = fs::read(c.source.join("big.bin")).unwrap();
    fs::write(c.source.join("fine.txt"), "fine").unwrap();
    c.wait_synced(SYNC);
    corrupt_in_place(&c.root.join("txt/victim.txt"), 150_000, 8);
    // In the last chunk: a server that streamed before checking would have sent all the rest.
    corrupt_in_place(&c.root.join("others/big.bin"), 5 << 20, 8);
    let web = Web::start(&c, &[]);

    for (name, bytes) in [("victim.txt", &small), ("big.bin", &big)] {
        let runs: Vec<&[u8]> = [0usize, 1_000, 100_000]
            .iter()
            .map(|&at| &bytes[at..at + 64])
            .collect();
        for path in [
            format!("/download/{name}"),
            format!("/download/{name}?version=1"),
        ] {
            let r = web.get(&path);
            assert_eq!(r.status, 502, "GET {path}: {}", r.show());
            assert!(r.text().contains("BLAKE3"), "GET {path}: {}", r.show());
            assert!(
                r.header("content-type")
                    .unwrap_or("")
                    .starts_with("text/html"),
                "{path}: {:?}",
                r.headers
            );
            assert!(
                r.body.len() < 100_000,
                "{path}: a {} byte error page",
                r.body.len()
            );
            for run in &runs {
                assert!(
                    !r.body.windows(64).any(|w| w == *run),
                    "GET {path}: the body holds stored bytes"
                );
            }
        }
    }
    assert_eq!(web.bytes("/download/fine.txt"), b"fine");
    // The listing still shows the files.
    let shown = names(&rows(&web.page("/browse/"), "entries"));
    assert_eq!(shown, ["big.bin", "fine.txt", "victim.txt"]);
}

/// `/api/health` and `/health` tell the broker, the node (with its address) and the watcher
/// are up, with the files and bytes stored and no alarm, and plots as inline SVG (also from
/// `/api/plots`); with the broker killed both still answer, within the timeout, saying it is
/// unreachable; when it is back, so is the page.
#[test]
fn health_reports_the_cluster_and_still_answers_with_the_broker_down() {
    let mut c = Cluster::start_without_watcher();
    let status = c.dir.path().join("watch-status.json");
    let sf = status.display().to_string();
    c.start_watcher_with(&["--status-file", &sf]);
    let files = [
        ("m/a.mp3", 70_000usize),
        ("notes.txt", 5),
        ("doc.pdf", 300_000),
    ];
    let total: u64 = files.iter().map(|(_, n)| *n as u64).sum();
    for (i, (name, len)) in files.iter().enumerate() {
        let path = c.source.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, random_bytes(i as u64 + 1, *len)).unwrap();
    }
    c.wait_synced(SYNC);
    let web = Web::start(&c, &["--status-file", &sf, "--timeout", "3"]);

    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let v = web.health();
        if v["broker"]["reachable"] == true
            && v["files"] == 3
            && v["bytes"] == total
            && v["storage_nodes"][0]["reachable"] == true
            && v["watchers"].as_array().is_some_and(|w| w.len() == 1)
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "/api/health never reported the cluster: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let nodes = v["storage_nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{v:#}");
    let node_addr = nodes[0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{v:#}"));
    assert!(
        node_addr.contains(&format!("127.0.0.1:{}", c.base_port + 4)),
        "node address {node_addr}"
    );
    assert_eq!(v["alarms"].as_array().map(Vec::len), Some(0), "{v:#}");

    let html = web.page("/health");
    let plots = element_by_id(&html, "div", "plots").unwrap_or_else(|| panic!("{html}"));
    assert!(plots.matches("<svg").count() >= 4, "four plots: {plots}");
    assert!(html.contains(node_addr), "the node's address on /health");
    let r = web.get("/api/plots");
    assert_eq!(r.status, 200, "{}", r.show());
    assert!(r.text().matches("<svg").count() >= 4, "{}", r.show());
    for asset in ["/assets/app.css", "/assets/app.js"] {
        let r = web.get(asset);
        assert_eq!(r.status, 200, "{asset}: {}", r.show());
        assert!(!r.body.is_empty(), "{asset}");
        let t = r.text().to_ascii_lowercase();
        assert!(!t.contains("@import") && !t.contains("url(http"), "{asset}");
    }
    assert!(html.contains("/assets/app.js") && html.contains("/assets/app.css"));

    // The broker killed: the page and the JSON still answer, promptly, saying so.
    c.kill9(Role::Broker);
    wait_until(
        "/api/health says the broker is unreachable",
        Duration::from_secs(30),
        || web.health()["broker"]["reachable"] == false,
    );
    let started = Instant::now();
    let r = web.get("/health");
    assert_eq!(r.status, 200, "/health with the broker down: {}", r.show());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "/health took {:?} with the broker down",
        started.elapsed()
    );
    assert_eq!(web.get("/api/plots").status, 200);
    let started = Instant::now();
    let r = web.get("/browse/");
    assert!(
        r.status >= 500 || r.status == 200,
        "/browse/ with the broker down: {}",
        r.show()
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    c.restart(Role::Broker);
    wait_until(
        "/api/health sees the broker again",
        Duration::from_secs(30),
        || {
            let v = web.health();
            v["broker"]["reachable"] == true && v["files"] == 3
        },
    );
    assert_eq!(
        names(&rows(&web.page("/browse/"), "entries")),
        ["doc.pdf", "m", "notes.txt"]
    );
}
