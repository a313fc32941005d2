//! How listings are paged, the same on every port: the size of a page ([`PageBuilder`]: one
//! meaning of `limit`, one byte budget) and the cursor of a storage node's listing
//! ([`node_cursor`], [`parse_node_cursor`]). The broker's cursor is simply the last name.

use crate::limits::{LISTING_BUDGET, MAX_LIST_PAGE};
use crate::message::Entry;
use crate::names::{self, NameError};
use crate::route::Class;

/// Collects listing entries into a page that respects [`MAX_LIST_PAGE`](MAX_LIST_PAGE)
/// and [`LISTING_BUDGET`](LISTING_BUDGET).
#[derive(Debug, Default)]
pub struct PageBuilder {
    limit: usize,
    bytes: usize,
    entries: Vec<Entry>,
}

impl PageBuilder {
    /// A page of at most `limit` entries (capped at `MAX_LIST_PAGE`; 0 counts as 1).
    pub fn new(limit: u32) -> PageBuilder {
        let limit = limit.clamp(1, MAX_LIST_PAGE) as usize;
        PageBuilder {
            limit,
            bytes: 0,
            entries: Vec::new(),
        }
    }

    /// Whether the page has room for `entry`; an empty page always has.
    pub fn fits(&self, entry: &Entry) -> bool {
        self.entries.is_empty()
            || (self.entries.len() < self.limit && self.bytes + entry.wire_size() <= LISTING_BUDGET)
    }

    /// Adds `entry` (check [`fits`](Self::fits) first).
    pub fn push(&mut self, entry: Entry) {
        self.bytes += entry.wire_size();
        self.entries.push(entry);
    }

    /// The entries collected.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }
}

/// The cursor that continues a storage node's listing (`list` or `check` on its serve port)
/// after `entry`: `"<class>/<name>"`, since the node lists class by class.
pub fn node_cursor(entry: &Entry) -> String {
    format!("{}/{}", entry.class, entry.name)
}

/// Why a node's listing cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("has no '/'")]
    NoSlash,
    #[error("names no class")]
    NoClass,
    #[error("{0}")]
    BadName(#[from] NameError),
}

/// The class and name of a node's listing cursor made by [`node_cursor`].
pub fn parse_node_cursor(after: &str) -> Result<(Class, &str), CursorError> {
    let (class, name) = after.split_once('/').ok_or(CursorError::NoSlash)?;
    let class = class.parse().map_err(|_| CursorError::NoClass)?;
    names::check(name)?;
    Ok((class, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hash;

    fn entry(name: &str) -> Entry {
        Entry {
            name: name.into(),
            class: Class::Txt,
            size: 1,
            blake3: Hash::of(b"x"),
            modified: 0,
            version: 1,
        }
    }

    #[test]
    fn a_limit_of_zero_counts_as_one_and_a_page_keeps_to_its_budget() {
        let mut page = PageBuilder::new(0);
        assert!(page.fits(&entry("a")));
        page.push(entry("a"));
        assert!(!page.fits(&entry("b")), "limit 0 is a page of one");

        let long = "n".repeat(4000);
        let mut page = PageBuilder::new(u32::MAX);
        let mut n = 0;
        while page.fits(&entry(&long)) {
            page.push(entry(&long));
            n += 1;
        }
        assert!(n * (long.len() + crate::limits::ENTRY_OVERHEAD) <= LISTING_BUDGET);
        assert!((n + 1) * (long.len() + crate::limits::ENTRY_OVERHEAD) > LISTING_BUDGET);
    }

    #[test]
    fn node_cursors_round_trip_and_bad_ones_say_why() {
        let e = entry("music/a b.txt");
        let c = node_cursor(&e);
        assert_eq!(c, "txt/music/a b.txt");
        assert_eq!(parse_node_cursor(&c), Ok((Class::Txt, "music/a b.txt")));
        assert_eq!(parse_node_cursor("txt"), Err(CursorError::NoSlash));
        assert_eq!(parse_node_cursor("wav/a"), Err(CursorError::NoClass));
        assert!(matches!(
            parse_node_cursor("txt/../a"),
            Err(CursorError::BadName(_))
        ));
    }
}
