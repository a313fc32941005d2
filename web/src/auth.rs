//! The access token: read from `--token-file`, asked for once by the login page, then carried
//! by a cookie (`HttpOnly`, `SameSite=Strict`) that holds a key derived from the token, never
//! the token itself.

use std::path::Path;

/// The name of the cookie.
pub const COOKIE: &str = "dfs_token";

/// Shortest token accepted.
const MIN_LEN: usize = 16;

/// The token and the cookie value it grants.
pub struct Token {
    token: String,
    cookie: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(redacted)")
    }
}

impl Token {
    /// Reads the token from `path` (its first line, trimmed).
    pub fn read(path: &Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        if token.chars().count() < MIN_LEN {
            return Err(format!(
                "--token-file {}: the token is shorter than {MIN_LEN} characters",
                path.display()
            ));
        }
        Ok(Token::new(token))
    }

    fn new(token: String) -> Token {
        let cookie = blake3::derive_key("dfs web 2026-12 session cookie", token.as_bytes());
        let cookie = cookie.iter().map(|b| format!("{b:02x}")).collect();
        Token { token, cookie }
    }

    /// Whether `given` is the token (compared in constant time).
    pub fn is(&self, given: &str) -> bool {
        same(given.as_bytes(), self.token.as_bytes())
    }

    /// The `Set-Cookie` value for a browser that gave the token.
    pub fn set_cookie(&self) -> String {
        format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            self.cookie
        )
    }

    /// Whether the `Cookie` header `header` carries the cookie.
    pub fn admits(&self, header: Option<&str>) -> bool {
        header.is_some_and(|h| {
            h.split(';').any(|kv| match kv.trim().split_once('=') {
                Some((k, v)) => k == COOKIE && same(v.as_bytes(), self.cookie.as_bytes()),
                None => false,
            })
        })
    }
}

/// `a == b` in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_derived_and_checked() {
        let t = Token::new("correct horse battery staple".into());
        assert!(t.is("correct horse battery staple"));
        assert!(!t.is("correct horse battery stapl"));
        let set = t.set_cookie();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert!(!set.contains("horse"), "the cookie never holds the token");
        let value = set.split(';').next().unwrap();
        assert!(t.admits(Some(&format!("other=1; {value}"))));
        assert!(!t.admits(Some("dfs_token=00")));
        assert!(!t.admits(None));
    }

    #[test]
    fn a_short_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "short\n").unwrap();
        assert!(Token::read(&f).unwrap_err().contains("shorter"));
        std::fs::write(&f, "0123456789abcdef\n").unwrap();
        assert!(Token::read(&f).is_ok());
    }
}
