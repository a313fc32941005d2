//! Listing: pages through the broker's index and prints each page as it comes, as a table (sizes
//! for people: `1.2 MiB`) or as one JSON object per line (exact bytes). Memory holds one page at
//! a time, whatever the size of the store. `--class` keeps the rows of one class.

use crate::client::Client;
use crate::error::{stdout_error, FetchError};
use crate::human::Size;
use schema::limits::MAX_LIST_PAGE;
use schema::{Class, Entry, Message};
use std::borrow::Cow;
use std::fmt;
use std::io::Write;

/// Widest the NAME column grows; longer names overflow their row rather than widen every row.
const MAX_NAME_WIDTH: usize = 60;

/// Which tree a listing pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// The stored files now (the broker's index, in name order).
    Now,
    /// The versions current at this instant (ns), deleted ones included (the node's history).
    At(i64),
    /// The names deleted since, each as its last kept version (the node's history).
    Deleted,
}

impl Tree {
    /// Whether the node's history answers: pages come class by class and continue after a
    /// node's cursor.
    fn is_history(self) -> bool {
        self != Tree::Now
    }
}

/// Lists every stored file (of `class`, if given) of `tree` to `out`, `json` choosing the
/// format. A listing of the history comes class by class: it is gathered and sorted by name
/// first, so that it reads like a listing of the present.
pub(crate) fn list(
    client: &mut Client,
    tree: Tree,
    json: bool,
    class: Option<Class>,
    out: &mut dyn Write,
) -> Result<(), FetchError> {
    let mut format = if json {
        Format::Json
    } else {
        Format::Table(Table::default())
    };
    if tree.is_history() {
        let mut all = Vec::new();
        pages(client, tree, |entries| {
            all.extend(
                entries
                    .iter()
                    .filter(|e| class.is_none_or(|c| c == e.class))
                    .cloned(),
            );
            Ok(())
        })?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        format.page(&all, out).map_err(stdout_error)?;
        format.finish(out).map_err(stdout_error)?;
        return out.flush().map_err(stdout_error);
    }
    pages(client, tree, |entries| {
        let page: Vec<Entry>;
        let entries = match class {
            Some(c) => {
                page = entries.iter().filter(|e| e.class == c).cloned().collect();
                &page[..]
            }
            None => entries,
        };
        format.page(entries, out).map_err(stdout_error)
    })?;
    format.finish(out).map_err(stdout_error)?;
    out.flush().map_err(stdout_error)
}

/// Pages through the listing of `tree`, handing each page to `on_page`. The next page is asked
/// for before the current one is handed over, so the broker prepares it meanwhile.
pub fn pages(
    client: &mut Client,
    tree: Tree,
    mut on_page: impl FnMut(&[Entry]) -> Result<(), FetchError>,
) -> Result<(), FetchError> {
    let mut id = ask(client, tree, None)?;
    // The listing's order: by name, or class by class then by name.
    let position = |e: &Entry| {
        let class = if tree.is_history() {
            Some(e.class)
        } else {
            None
        };
        (class, e.name.clone())
    };
    let mut prior: Option<(Option<Class>, String)> = None;
    loop {
        let reply = client.reply(id)?;
        let Message::Listing { entries, more, .. } = reply.msg else {
            return Err(FetchError::Protocol(format!(
                "expected listing in answer to list, got {}",
                reply.msg.kind()
            )));
        };
        if more {
            let Some(last) = entries.last() else {
                return Err(FetchError::Protocol(
                    "an empty listing page says more follows".into(),
                ));
            };
            let now = position(last);
            if prior.as_ref().is_some_and(|p| *p >= now) {
                return Err(FetchError::Protocol(
                    "a listing page says more follows but its cursor did not advance".into(),
                ));
            }
            let cursor = if tree.is_history() {
                schema::page::node_cursor(last)
            } else {
                last.name.clone()
            };
            prior = Some(now);
            id = ask(client, tree, Some(cursor))?;
        }
        on_page(&entries)?;
        if !more {
            return Ok(());
        }
    }
}

/// Sends `list` of `tree` for the page after `after`; returns the request id.
fn ask(client: &mut Client, tree: Tree, after: Option<String>) -> Result<u64, FetchError> {
    let id = client.new_id();
    client.send(&Message::List {
        id,
        after,
        limit: MAX_LIST_PAGE,
        at: match tree {
            Tree::At(t) => Some(t),
            _ => None,
        },
        deleted: tree == Tree::Deleted,
    })?;
    Ok(id)
}

enum Format {
    Table(Table),
    Json,
}

impl Format {
    fn page(&mut self, entries: &[Entry], out: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Format::Table(t) => t.page(entries, out),
            Format::Json => entries.iter().try_for_each(|e| json_line(e, out)),
        }
    }

    fn finish(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Format::Table(t) if !t.header_done => t.header(out),
            _ => Ok(()),
        }
    }
}

/// The human table `NAME  SIZE  CLASS  MODIFIED`, sizes in binary units. Column widths come from
/// the first page and only grow, so rows stay aligned in practice with one page in memory.
#[derive(Default)]
struct Table {
    name_width: usize,
    size_width: usize,
    header_done: bool,
}

impl Table {
    fn page(&mut self, entries: &[Entry], out: &mut dyn Write) -> std::io::Result<()> {
        let mut names = Vec::with_capacity(entries.len());
        for e in entries {
            let name = escaped(&e.name);
            self.name_width = self
                .name_width
                .max(name.chars().count().min(MAX_NAME_WIDTH));
            self.size_width = self.size_width.max(Size(e.size).to_string().len());
            names.push(name);
        }
        if !self.header_done {
            self.header(out)?;
        }
        for (e, name) in entries.iter().zip(names) {
            writeln!(
                out,
                "{name:<nw$}  {size:>sw$}  {class:<6}  {modified}",
                nw = self.name_width,
                size = Size(e.size),
                sw = self.size_width,
                class = e.class.as_str(),
                modified = Seconds(e.modified),
            )?;
        }
        Ok(())
    }

    fn header(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        self.header_done = true;
        writeln!(
            out,
            "{:<nw$}  {:>sw$}  {:<6}  MODIFIED",
            "NAME",
            "SIZE",
            "CLASS",
            nw = self.name_width.max(4),
            sw = self.size_width.max(4),
        )
    }
}

/// `name` with control characters escaped (`schema::names::escape`), borrowed when it has none.
fn escaped(name: &str) -> Cow<'_, str> {
    if schema::names::needs_escape(name) {
        Cow::Owned(schema::names::escape(name))
    } else {
        Cow::Borrowed(name)
    }
}

/// A time in ns since the epoch, displayed as RFC 3339 UTC to the second.
struct Seconds(i64);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 0 {
            // humantime formats only times after the epoch.
            return f.write_str("1970-01-01T00:00:00Z");
        }
        let t = schema::time::from_ns(self.0);
        write!(f, "{}", humantime::format_rfc3339_seconds(t))
    }
}

/// One entry as one JSON object on one line: `name`, `size`, `class`, `blake3` (hex),
/// `modified` (RFC 3339 with nanoseconds), `version`. Written field by field: this runs a
/// million times for a large store.
fn json_line(e: &Entry, out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(b"{\"name\":")?;
    serde_json::to_writer(&mut *out, &e.name)?;
    write!(
        out,
        ",\"size\":{},\"class\":\"{}\",\"blake3\":\"",
        e.size,
        e.class.as_str()
    )?;
    out.write_all(&e.blake3.hex_digits())?;
    out.write_all(b"\",\"modified\":\"")?;
    write!(out, "{}", schema::time::Rfc3339(e.modified))?;
    writeln!(out, "\",\"version\":{}}}", e.version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{Class, Hash};

    fn entry(name: &str, size: u64) -> Entry {
        Entry {
            name: name.into(),
            class: Class::Txt,
            size,
            blake3: Hash::of(name.as_bytes()),
            modified: 1_700_000_000_123_456_789,
            version: 2,
        }
    }

    #[test]
    fn table_aligns_columns_and_escapes_names() {
        let mut t = Table::default();
        let mut out = Vec::new();
        t.page(
            &[entry("a.txt", 5), entry("long\tname.txt", 123456)],
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME                 SIZE  CLASS   MODIFIED");
        assert_eq!(
            lines[1],
            "a.txt                 5 B  txt     2023-11-14T22:13:20Z"
        );
        assert_eq!(
            lines[2],
            "long\\tname.txt  120.6 KiB  txt     2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn empty_listing_prints_the_header() {
        let mut f = Format::Table(Table::default());
        let mut out = Vec::new();
        f.page(&[], &mut out).unwrap();
        f.finish(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
    }

    #[test]
    fn json_lines_carry_every_field() {
        let mut out = Vec::new();
        json_line(&entry("a.txt", 5), &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["name"], "a.txt");
        assert_eq!(v["size"], 5);
        assert_eq!(v["class"], "txt");
        assert_eq!(v["blake3"], Hash::of(b"a.txt").to_hex());
        assert_eq!(v["modified"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["version"], 2);
        let mut odd = entry("quote\"and\\back\nslash", 0);
        odd.modified = -1;
        let mut out = Vec::new();
        json_line(&odd, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["name"], odd.name);
        assert_eq!(v["modified"], "1970-01-01T00:00:00Z");
        assert_eq!(v["blake3"], odd.blake3.to_hex());
    }
}
