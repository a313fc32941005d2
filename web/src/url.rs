//! Paths, queries and forms of the page's URLs. A stored name travels percent-encoded, one
//! component at a time, so that every name (spaces, `#`, `?`, `%`, non-ASCII) has one URL.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes of a path component or query value left as they are: the unreserved ones.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One component (or query value) percent-encoded.
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, KEEP).to_string()
}

/// A stored name as a URL path: each component encoded, `/` between them.
pub fn encode_name(name: &str) -> String {
    name.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// A percent-encoded path decoded; `None` when it is not UTF-8.
pub fn decode(text: &str) -> Option<String> {
    percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// A request's URL split into its path and its query (without the `?`).
pub fn split(url: &str) -> (&str, &str) {
    match url.split_once('?') {
        Some((path, query)) => (path, query),
        None => (url, ""),
    }
}

/// The pairs of a query or of a form body (`a=1&b=x+y`); undecodable pairs are left out.
pub fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(&k.replace('+', " "))?, decode(&v.replace('+', " "))?))
        })
        .collect()
}

/// The value of `key` in `pairs`, if given.
pub fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_the_round_trip() {
        for name in [
            "a b/c#d?.txt",
            "été/日本.mp3",
            "100%/x&y=z",
            "<script>.txt",
            "tab\there",
        ] {
            let url = encode_name(name);
            assert!(!url.contains(['#', '?', ' ', '<', '&', '\t']), "{url}");
            assert_eq!(decode(&url).as_deref(), Some(name));
        }
        assert_eq!(encode_name("a/b"), "a/b");
    }

    #[test]
    fn queries_and_forms_decode() {
        let p = pairs("q=caf%C3%A9+au+lait&at=2h&&bad=%FF&token=a%2Bb");
        assert_eq!(get(&p, "q"), Some("café au lait"));
        assert_eq!(get(&p, "at"), Some("2h"));
        assert_eq!(get(&p, "bad"), None);
        assert_eq!(get(&p, "token"), Some("a+b"));
        assert_eq!(split("/search?q=x"), ("/search", "q=x"));
        assert_eq!(split("/browse/"), ("/browse/", ""));
    }
}
