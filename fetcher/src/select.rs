//! Which stored files a retrieval asks for: names as given, and glob patterns (`music/*.mp3`)
//! matched against the broker's listing, optionally kept to one `--class`.
//!
//! An argument is a pattern when it holds one of `*`, `?`, `[` or `{`. Patterns match whole
//! names; `*` and `?` stay within one folder (`**` crosses folders), as in a shell, and `\`
//! escapes a special character (names never hold a backslash, so this is unambiguous).

use crate::client::Client;
use crate::error::FetchError;
use crate::list::Tree;
use globset::{GlobBuilder, GlobMatcher};
use schema::Class;
use std::collections::HashSet;

/// Whether `arg` is a glob pattern rather than a name.
pub fn is_pattern(arg: &str) -> bool {
    arg.contains(['*', '?', '[', '{'])
}

/// A compiled pattern and how many stored files it matched.
pub struct Pattern {
    pub(crate) text: String,
    matcher: GlobMatcher,
    pub(crate) hits: usize,
}

impl Pattern {
    /// Compiles `text`; a malformed pattern is a usage error.
    pub fn new(text: &str) -> Result<Pattern, FetchError> {
        let glob = GlobBuilder::new(text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| FetchError::Usage(format!("bad pattern {text:?}: {}", e.kind())))?;
        Ok(Pattern {
            text: text.to_string(),
            matcher: glob.compile_matcher(),
            hits: 0,
        })
    }

    /// Whether the pattern matches the whole of `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

/// The entries of `tree` (of `class`, if given) that `patterns` match, in listing order, each
/// once; counts each pattern's hits.
pub(crate) fn expand(
    client: &mut Client,
    tree: Tree,
    patterns: &mut [Pattern],
    class: Option<Class>,
    mut on_page: impl FnMut(&[schema::Entry]),
) -> Result<Vec<schema::Entry>, FetchError> {
    let mut names = Vec::new();
    let mut seen = HashSet::new();
    crate::list::pages(client, tree, |entries| {
        let before = names.len();
        for e in entries {
            if class.is_some_and(|c| c != e.class) {
                continue;
            }
            let mut hit = false;
            for p in patterns.iter_mut() {
                if p.matches(&e.name) {
                    p.hits += 1;
                    hit = true;
                }
            }
            if hit && seen.insert(e.name.clone()) {
                names.push(e.clone());
            }
        }
        on_page(&names[before..]);
        Ok(())
    })?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(p: &str, name: &str) -> bool {
        Pattern::new(p).unwrap().matcher.is_match(name)
    }

    #[test]
    fn patterns_match_like_a_shell() {
        assert!(is_pattern("music/*.mp3") && is_pattern("a?.txt") && is_pattern("{a,b}.txt"));
        assert!(!is_pattern("music/a.mp3"));
        assert!(matches("music/*.mp3", "music/a.mp3"));
        assert!(
            !matches("music/*.mp3", "music/sub/a.mp3"),
            "* stays in its folder"
        );
        assert!(matches("music/**/*.mp3", "music/sub/a.mp3"));
        assert!(!matches("*.mp3", "music/a.mp3"));
        assert!(matches("{a,b}.txt", "b.txt"));
        assert!(matches("\\*.txt", "*.txt") && !matches("\\*.txt", "a.txt"));
        assert!(matches("[ab].txt", "a.txt") && !matches("[ab].txt", "c.txt"));
        let e = Pattern::new("a[").err().unwrap();
        assert!(
            matches!(e, FetchError::Usage(ref m) if m.contains("a[")),
            "{e}"
        );
    }
}
