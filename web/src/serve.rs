//! The HTTP workers and the routes. Each worker takes requests from the one listening socket
//! and answers them with its own link to the broker (a ZeroMQ socket belongs to one thread),
//! made when first needed and kept. Only `GET` and `HEAD` are served, and `POST /login`.

use crate::files::{self, Archive};
use crate::pages;
use crate::url;
use crate::Shared;
use fetcher::client::Client;
use fetcher::error::FetchError;
use maud::Markup;
use schema::ErrorCode;
use std::io::Read;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tiny_http::{Header, Method, Request, Response, StatusCode};

/// Workers answering requests at once.
pub const WORKERS: usize = 4;

/// Longest login form accepted.
const MAX_FORM: u64 = 4096;

const CSS: &str = include_str!("../assets/app.css");
const JS: &str = include_str!("../assets/app.js");

/// Starts the workers on `server`; they stop once `shared.stop` is triggered and the server
/// is unblocked.
pub fn start(server: Arc<tiny_http::Server>, shared: Arc<Shared>) -> Vec<JoinHandle<()>> {
    (0..WORKERS)
        .filter_map(|n| {
            let (server, shared) = (server.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("web-{n}"))
                .spawn(move || {
                    let mut client: Option<Client> = None;
                    while !shared.stop.is_triggered() {
                        match server.recv_timeout(Duration::from_millis(200)) {
                            Ok(Some(req)) => handle(req, &shared, &mut client),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::debug!("accepting a request: {e}");
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                })
                .map_err(|e| tracing::error!("cannot start a web worker: {e}"))
                .ok()
        })
        .collect()
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("header names and values are ASCII")
}

/// The headers of every answer: no framing, no sniffing, nothing loaded from elsewhere.
fn guard_headers() -> Vec<Header> {
    vec![
        header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        header("X-Content-Type-Options", "nosniff"),
        header("Referrer-Policy", "no-referrer"),
        header("Cache-Control", "no-store"),
    ]
}

fn respond<R: Read>(
    req: Request,
    code: u16,
    mut headers: Vec<Header>,
    body: R,
    len: Option<usize>,
) {
    headers.extend(guard_headers());
    let response = Response::new(StatusCode(code), headers, body, len, None);
    if let Err(e) = req.respond(response) {
        tracing::debug!("the browser went away: {e}");
    }
}

fn page(req: Request, code: u16, markup: Markup) {
    let body = markup.into_string().into_bytes();
    let len = body.len();
    let h = vec![header("Content-Type", "text/html; charset=utf-8")];
    respond(req, code, h, std::io::Cursor::new(body), Some(len));
}

fn redirect(req: Request, to: &str, extra: Vec<Header>) {
    let mut h = vec![header("Location", to)];
    h.extend(extra);
    respond(req, 303, h, std::io::empty(), Some(0));
}

fn text(req: Request, code: u16, content_type: &str, body: String) {
    let len = body.len();
    let h = vec![header("Content-Type", content_type)];
    respond(
        req,
        code,
        h,
        std::io::Cursor::new(body.into_bytes()),
        Some(len),
    );
}

/// `Content-Disposition` for a download saved as `file`: an ASCII fallback, and the exact name
/// (RFC 6266 `filename*`).
fn attachment(file: &str) -> Header {
    let ascii: String = file
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let value = format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        url::encode(file)
    );
    header("Content-Disposition", &value)
}

fn cookie_of(req: &Request) -> Option<String> {
    req.headers()
        .iter()
        .find(|h| h.field.equiv("Cookie"))
        .map(|h| h.value.as_str().to_string())
}

fn handle(req: Request, shared: &Shared, client: &mut Option<Client>) {
    let full = req.url().to_string();
    let (path, query) = url::split(&full);
    let (path, query) = (path.to_string(), url::pairs(query));
    let method = req.method().clone();
    if path == "/login" && method == Method::Post {
        return login(req, shared);
    }
    if method != Method::Get && method != Method::Head {
        let h = vec![header("Allow", "GET, HEAD")];
        let why = "this page only reads: nothing can be changed through it".to_string();
        let body = pages::error("Not allowed", &why).into_string();
        let len = body.len();
        return respond(
            req,
            405,
            h,
            std::io::Cursor::new(body.into_bytes()),
            Some(len),
        );
    }
    match path.as_str() {
        "/assets/app.css" => return text(req, 200, "text/css; charset=utf-8", CSS.into()),
        "/assets/app.js" => return text(req, 200, "text/javascript; charset=utf-8", JS.into()),
        "/login" => return page(req, 200, pages::login(false)),
        _ => {}
    }
    if let Some(token) = &shared.token {
        if !token.admits(cookie_of(&req).as_deref()) {
            if path.starts_with("/api/") {
                return text(
                    req,
                    401,
                    "text/plain; charset=utf-8",
                    "the access token is needed\n".into(),
                );
            }
            return redirect(req, "/login", Vec::new());
        }
    }
    // An age (`2h`) becomes the instant it means now, so that every link of the page, its next
    // page included, shows the same tree.
    let at_text = url::get(&query, "at").filter(|t| !t.trim().is_empty());
    let at = match at_text.map(|t| fetcher::parse_time(t.trim(), now_ns())) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return page(req, 400, pages::error("Not a time", &e)),
    };
    if let (Some(text), Some(t)) = (at_text, at) {
        let canonical = schema::time::rfc3339(t);
        if text != canonical {
            let rest: Vec<String> = query
                .iter()
                .filter(|(k, _)| k != "at")
                .map(|(k, v)| format!("{}={}", url::encode(k), url::encode(v)))
                .chain([format!("at={}", url::encode(&canonical))])
                .collect();
            return redirect(req, &format!("{path}?{}", rest.join("&")), Vec::new());
        }
    }
    let at_text = at.map(schema::time::rfc3339);
    let at_text = at_text.as_deref();
    let after = url::get(&query, "after").map(str::to_string);
    if path == "/" {
        return redirect(req, "/browse/", Vec::new());
    }
    if path == "/health" {
        let v = shared.health.latest();
        return page(req, 200, pages::health(&v, &shared.health.series()));
    }
    if path == "/api/health" {
        return text(
            req,
            200,
            "application/json",
            format!("{:#}\n", shared.health.latest()),
        );
    }
    if path == "/api/plots" {
        let body = pages::plots(&shared.health.series()).into_string();
        return text(req, 200, "text/html; charset=utf-8", body);
    }
    if path == "/api/facts" {
        let body = pages::facts(&shared.health.latest()).into_string();
        return text(req, 200, "text/html; charset=utf-8", body);
    }
    if path == "/search" {
        let q = url::get(&query, "q").unwrap_or("").to_string();
        let c = match link(shared, client) {
            Ok(c) => c,
            Err(e) => return broker_error(req, &e, shared, client),
        };
        if let Err(failed) = search(req, shared, c, &q, at, at_text, after.as_deref()) {
            let (req, e) = *failed;
            broker_error(req, &e, shared, client);
        }
        return;
    }
    let Some((route, rest)) = path[1..].split_once('/') else {
        return page(req, 404, pages::error("Not found", "there is no such page"));
    };
    let Some(name) = url::decode(rest) else {
        return page(
            req,
            400,
            pages::error("Bad address", "the address is not UTF-8"),
        );
    };
    let c = match link(shared, client) {
        Ok(c) => c,
        Err(e) => return broker_error(req, &e, shared, client),
    };
    let result = match route {
        "browse" => browse(req, shared, c, &name, at, at_text, after.as_deref()),
        "history" => history(req, c, &name),
        "download" => download(req, shared, c, &name, &query, at),
        "archive" => archive(req, shared, c, &name, at),
        _ => {
            page(req, 404, pages::error("Not found", "there is no such page"));
            Ok(())
        }
    };
    if let Err(failed) = result {
        let (req, e) = *failed;
        broker_error(req, &e, shared, client);
    }
}

/// A route's outcome: answered, or the request back with the broker's error to report.
type Routed = Result<(), Box<(Request, FetchError)>>;

fn now_ns() -> i64 {
    schema::time::to_ns(std::time::SystemTime::now())
}

fn link<'a>(shared: &Shared, client: &'a mut Option<Client>) -> Result<&'a mut Client, FetchError> {
    if client.is_none() {
        *client = Some(shared.link.connect()?);
    }
    Ok(client.as_mut().expect("connected above"))
}

/// Answers with why the broker could not answer; a link that failed is made again next time.
fn broker_error(req: Request, e: &FetchError, shared: &Shared, client: &mut Option<Client>) {
    let (code, title) = match e {
        FetchError::Remote {
            code: ErrorCode::NotFound,
            ..
        } => (404, "Not found"),
        FetchError::Integrity
        | FetchError::Remote {
            code: ErrorCode::Integrity,
            ..
        } => (502, "Corrupt content"),
        e if e.is_link_failure() => {
            *client = None;
            (503, "The broker does not answer")
        }
        _ => (502, "The broker refused"),
    };
    let why = match e {
        FetchError::Integrity => {
            "the stored bytes do not match their BLAKE3 hash; nothing of them was sent".to_string()
        }
        FetchError::Remote {
            code: ErrorCode::Integrity,
            message,
        } => {
            format!("{message} (the stored bytes do not match their BLAKE3 hash; nothing of them was sent)")
        }
        other => format!("{other} (broker {})", shared.link.endpoint),
    };
    if code == 502 {
        tracing::error!("{why}");
    }
    page(req, code, pages::error(title, &why));
}

#[allow(clippy::too_many_arguments)]
fn browse(
    req: Request,
    shared: &Shared,
    client: &mut Client,
    folder: &str,
    at: Option<i64>,
    at_text: Option<&str>,
    after: Option<&str>,
) -> Routed {
    let listing = match shared.snapshots.get(client, at) {
        Ok(l) => l,
        Err(e) => return Err(Box::new((req, e))),
    };
    let folder = crate::snapshot::folder_path(folder);
    if !listing.is_folder(&folder) {
        page(
            req,
            404,
            pages::error("Not found", &format!("no stored file is under {folder}")),
        );
        return Ok(());
    }
    let (rows, next) = listing.rows(&folder, after, pages::PAGE);
    let under = listing.under(&folder);
    let totals = (under.len(), under.iter().map(|e| e.size).sum());
    page(
        req,
        200,
        pages::folder(&folder, at_text, &rows, next.as_deref(), totals),
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn search(
    req: Request,
    shared: &Shared,
    client: &mut Client,
    q: &str,
    at: Option<i64>,
    at_text: Option<&str>,
    after: Option<&str>,
) -> Routed {
    let listing = match shared.snapshots.get(client, at) {
        Ok(l) => l,
        Err(e) => return Err(Box::new((req, e))),
    };
    match listing.search(q, after, pages::PAGE) {
        Ok((hits, next)) => page(req, 200, pages::search(q, at_text, &hits, next.as_deref())),
        Err(why) => page(req, 400, pages::error("Bad pattern", &why)),
    }
    Ok(())
}

fn history(req: Request, client: &mut Client, name: &str) -> Routed {
    match fetcher::history::versions(client, name) {
        Ok(v) if v.is_empty() => {
            page(
                req,
                404,
                pages::error("Not found", &format!("{name} has no version")),
            );
            Ok(())
        }
        Ok(v) => {
            page(req, 200, pages::history(name, &v));
            Ok(())
        }
        Err(e) => Err(Box::new((req, e))),
    }
}

fn download(
    req: Request,
    shared: &Shared,
    client: &mut Client,
    name: &str,
    query: &[(String, String)],
    at: Option<i64>,
) -> Routed {
    let version = match url::get(query, "version").map(str::parse::<u64>) {
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            page(
                req,
                400,
                pages::error("Bad version", "version must be a number"),
            );
            return Ok(());
        }
        None => match at {
            Some(t) => match shared.snapshots.get(client, Some(t)) {
                Ok(l) => match l.get(name) {
                    Some(e) => Some(e.version),
                    None => {
                        let why = format!("{name} did not exist at {}", schema::time::rfc3339(t));
                        page(req, 404, pages::error("Not found", &why));
                        return Ok(());
                    }
                },
                Err(e) => return Err(Box::new((req, e))),
            },
            None => None,
        },
    };
    let (entry, content) = match files::fetch(client, name, version) {
        Ok(ok) => ok,
        Err(e) => return Err(Box::new((req, e))),
    };
    let leaf = name.rsplit('/').next().unwrap_or(name);
    let h = vec![
        header("Content-Type", "application/octet-stream"),
        attachment(leaf),
    ];
    let len = usize::try_from(entry.size).ok();
    respond(req, 200, h, content.reader(), len);
    Ok(())
}

fn archive(
    req: Request,
    shared: &Shared,
    client: &mut Client,
    folder: &str,
    at: Option<i64>,
) -> Routed {
    let listing = match shared.snapshots.get(client, at) {
        Ok(l) => l,
        Err(e) => return Err(Box::new((req, e))),
    };
    let folder = crate::snapshot::folder_path(folder);
    let entries = listing.under(&folder).to_vec();
    if entries.is_empty() {
        page(
            req,
            404,
            pages::error("Not found", &format!("no stored file is under {folder}")),
        );
        return Ok(());
    }
    let base = folder
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|b| !b.is_empty())
        .unwrap_or("dfs");
    let when = at
        .map(|t| format!("-{}", schema::time::rfc3339(t)))
        .unwrap_or_default();
    let file = format!("{base}{when}.tar").replace(':', "-");
    let h = vec![
        header("Content-Type", "application/x-tar"),
        attachment(&file),
    ];
    let reader = Archive::new(client, &folder, &entries);
    respond(req, 200, h, reader, None);
    Ok(())
}

fn login(mut req: Request, shared: &Shared) {
    let Some(token) = &shared.token else {
        return redirect(req, "/", Vec::new());
    };
    let mut body = String::new();
    let read = req.as_reader().take(MAX_FORM).read_to_string(&mut body);
    let pairs = url::pairs(body.trim());
    match (read, url::get(&pairs, "token")) {
        (Ok(_), Some(given)) if token.is(given) => {
            redirect(req, "/", vec![header("Set-Cookie", &token.set_cookie())])
        }
        _ => {
            tracing::warn!(
                "a wrong access token from {}",
                req.remote_addr().map(|a| a.to_string()).unwrap_or_default()
            );
            page(req, 401, pages::login(true))
        }
    }
}
