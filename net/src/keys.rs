//! CURVE keys and their files.
//!
//! * A **public key file** (`NAME.pub`) is one line: the 40-character Z85 text of the key.
//! * A **secret key file** (`NAME.key`) holds the secret key the same way, after a comment line;
//!   it must be readable by its owner only (mode 600): a looser file is refused when loaded.
//! * An **allow-list** is a file of public keys, one a line, or a folder whose `*.pub` files are
//!   read that way. Lines starting with `#` that are not keys are comments; blank lines are
//!   skipped.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Length of a CURVE key in bytes.
pub const KEY_LEN: usize = 32;

/// Length of a key in Z85 text.
pub const Z85_LEN: usize = 40;

/// The Z85 alphabet (ZeroMQ RFC 32).
const Z85: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// The Z85 text of a 32-byte key.
pub fn z85_encode(bytes: &[u8; KEY_LEN]) -> String {
    let mut out = String::with_capacity(Z85_LEN);
    for chunk in bytes.chunks(4) {
        let mut value = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let mut digits = [0u8; 5];
        for d in digits.iter_mut().rev() {
            *d = Z85[(value % 85) as usize];
            value /= 85;
        }
        out.extend(digits.iter().map(|&b| b as char));
    }
    out
}

/// The 32 bytes of a key from its Z85 text, or `None` when `text` is not exactly 40 Z85
/// characters encoding a key.
pub fn z85_decode(text: &str) -> Option<[u8; KEY_LEN]> {
    let text = text.as_bytes();
    if text.len() != Z85_LEN {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, chunk) in text.chunks(5).enumerate() {
        let mut value: u64 = 0;
        for c in chunk {
            let digit = Z85.iter().position(|z| z == c)?;
            value = value * 85 + digit as u64;
        }
        let value = u32::try_from(value).ok()?;
        out[i * 4..i * 4 + 4].copy_from_slice(&value.to_be_bytes());
    }
    Some(out)
}

/// A CURVE public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// The key with these bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> PublicKey {
        PublicKey(bytes)
    }

    /// The key whose Z85 text is `text`.
    pub fn from_z85(text: &str) -> Option<PublicKey> {
        z85_decode(text).map(PublicKey)
    }

    /// The 32 bytes of the key.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key as 40 characters of Z85.
    pub fn z85(&self) -> String {
        z85_encode(&self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.z85())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.z85())
    }
}

/// A CURVE key pair: this peer's identity.
pub struct KeyPair {
    public: PublicKey,
    secret: [u8; KEY_LEN],
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({}, secret hidden)", self.public)
    }
}

impl KeyPair {
    /// A new random key pair (libsodium's generator, through libzmq).
    pub fn generate() -> Result<KeyPair, KeyError> {
        require_curve()?;
        let pair = zmq::CurveKeyPair::new().map_err(|_| KeyError::NoCurve)?;
        Ok(KeyPair {
            public: PublicKey(pair.public_key),
            secret: pair.secret_key,
        })
    }

    /// The pair of a secret key: its public key is derived from it.
    pub fn from_secret(secret: [u8; KEY_LEN]) -> Result<KeyPair, KeyError> {
        require_curve()?;
        let secret_z85 =
            std::ffi::CString::new(z85_encode(&secret)).map_err(|_| KeyError::NoCurve)?;
        let mut public_z85 = [0u8; Z85_LEN + 1];
        // SAFETY: libzmq reads the 40 characters and NUL of `secret_z85` and writes 40
        // characters and a NUL into `public_z85`, which has room for exactly that.
        let rc = unsafe {
            zmq_sys::zmq_curve_public(public_z85.as_mut_ptr().cast(), secret_z85.as_ptr())
        };
        let public = (rc == 0)
            .then(|| std::str::from_utf8(&public_z85[..Z85_LEN]).ok())
            .flatten()
            .and_then(PublicKey::from_z85)
            .ok_or(KeyError::NoCurve)?;
        Ok(KeyPair { public, secret })
    }

    /// The public key, to hand to the peers that must accept this one.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The secret key, for the socket options.
    pub fn secret(&self) -> &[u8; KEY_LEN] {
        &self.secret
    }
}

/// Fails unless this build of libzmq has CURVE (it is linked with libsodium).
pub fn require_curve() -> Result<(), KeyError> {
    if zmq::has("curve") == Some(true) {
        Ok(())
    } else {
        Err(KeyError::NoCurve)
    }
}

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("CURVE is not available: this dfs was built with a libzmq without libsodium")]
    NoCurve,
    #[error("cannot read the key file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the secret key file {} can be read or changed by group or others (mode {mode:03o}); \
         run `chmod 600 {}` and check that nobody else has copied it",
        .path.display(), .path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{}:{line}: {why}", .path.display())]
    Bad {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{}: {why}", .path.display())]
    Count { path: PathBuf, why: String },
    #[error("{} already exists; dfs keygen never overwrites a key (remove it, or choose another name)", .path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The keys on the lines of `text` (read from `path`, for errors). A line of exactly 40 Z85
/// characters is a key; other lines starting with `#` are comments; blank lines are skipped.
fn parse_keys(text: &str, path: &Path) -> Result<Vec<(usize, [u8; KEY_LEN])>, KeyError> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(key) = z85_decode(line) {
            keys.push((i + 1, key));
        } else if !line.starts_with('#') {
            return Err(KeyError::Bad {
                path: path.to_path_buf(),
                line: i + 1,
                why: format!(
                    "not a CURVE key: a key is {Z85_LEN} characters of Z85 (as dfs keygen writes)"
                ),
            });
        }
    }
    Ok(keys)
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a secret key file and derives its public key. The file must be readable by its owner
/// only.
pub fn read_secret_key(path: &Path) -> Result<KeyPair, KeyError> {
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let keys = parse_keys(&read_text(path)?, path)?;
    match keys.as_slice() {
        [(_, secret)] => KeyPair::from_secret(*secret),
        _ => Err(KeyError::Count {
            path: path.to_path_buf(),
            why: format!(
                "a secret key file holds exactly one key, this one has {}",
                keys.len()
            ),
        }),
    }
}

/// Reads a public key file (one key).
pub fn read_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let keys = parse_keys(&read_text(path)?, path)?;
    match keys.as_slice() {
        [(_, key)] => Ok(PublicKey(*key)),
        _ => Err(KeyError::Count {
            path: path.to_path_buf(),
            why: format!(
                "a public key file holds exactly one key, this one has {}",
                keys.len()
            ),
        }),
    }
}

/// Reads an allow-list: the keys of a file, or of every `*.pub` file of a folder.
pub fn read_allow_list(path: &Path) -> Result<AllowedKeys, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(read_err)? {
            let p = entry.map_err(read_err)?.path();
            if p.extension().is_some_and(|e| e == "pub") && p.is_file() {
                files.push(p);
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut keys = AllowedKeys::new();
    for file in files {
        for (key, volumes) in parse_allowed(&read_text(&file)?, &file)? {
            keys.insert(key, volumes);
        }
    }
    Ok(keys)
}

/// The volumes an allowed key may claim (`None`: any).
pub type Volumes = Option<BTreeSet<String>>;

/// The keys of an allow-list, each with the volumes it may claim.
pub type AllowedKeys = std::collections::BTreeMap<PublicKey, Volumes>;

/// How the root volume is written in a `volumes=` restriction (a name never holds a `/`).
pub const ROOT_VOLUME: &str = "/";

/// The lines of an allow-list: `KEY`, or `KEY volumes=NAME[,NAME...]` to restrict a watcher key
/// to those volumes (`/` is the root volume); `#` starts a comment line.
fn parse_allowed(text: &str, path: &Path) -> Result<Vec<(PublicKey, Volumes)>, KeyError> {
    let bad = |line: usize, why: String| KeyError::Bad {
        path: path.to_path_buf(),
        line,
        why,
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        let Some(key) = z85_decode(first) else {
            return Err(bad(
                i + 1,
                format!(
                    "not a CURVE key: a key is {Z85_LEN} characters of Z85 (as dfs keygen \
                     writes), optionally followed by volumes=NAME,..."
                ),
            ));
        };
        let volumes = match words.next() {
            None => None,
            Some(w) => {
                let Some(list) = w.strip_prefix("volumes=") else {
                    return Err(bad(
                        i + 1,
                        format!("{w:?} after the key: only volumes=NAME[,NAME...] may follow it"),
                    ));
                };
                let mut set = BTreeSet::new();
                for v in list.split(',') {
                    if v != ROOT_VOLUME {
                        schema::names::Volume::named(v)
                            .map_err(|e| bad(i + 1, format!("volumes=: {e}")))?;
                    }
                    set.insert(v.to_string());
                }
                Some(set)
            }
        };
        if let Some(extra) = words.next() {
            return Err(bad(i + 1, format!("{extra:?}: one volumes= list per key")));
        }
        out.push((PublicKey(key), volumes));
    }
    Ok(out)
}

/// Writes a new key pair: the secret key to `secret` (mode 600) and the public key to `public`
/// (mode 644), both created new (an existing file is never replaced) and fsynced. If the public
/// key cannot be written, the secret key file is removed again.
pub fn write_key_pair(pair: &KeyPair, secret: &Path, public: &Path) -> Result<(), KeyError> {
    for path in [secret, public] {
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::Exists {
                path: path.to_path_buf(),
            });
        }
    }
    let secret_text = format!(
        "# dfs CURVE secret key (Z85). Keep it on this machine, readable by its owner only.\n{}\n",
        z85_encode(pair.secret())
    );
    write_new(secret, 0o600, &secret_text)?;
    if let Err(e) = write_new(public, 0o644, &format!("{}\n", pair.public())) {
        let _ = std::fs::remove_file(secret);
        return Err(e);
    }
    Ok(())
}

/// Creates `path` (never replacing a file) with `mode` and `text`, and fsyncs it.
fn write_new(path: &Path, mode: u32, text: &str) -> Result<(), KeyError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_path_buf(),
            },
            _ => KeyError::Write {
                path: path.to_path_buf(),
                source,
            },
        })?;
    // The umask may have removed bits, never added them; set the mode exactly anyway.
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all());
    written.map_err(|source| {
        let _ = std::fs::remove_file(path);
        KeyError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libzmq_has_curve() {
        assert_eq!(
            zmq::has("curve"),
            Some(true),
            "libzmq built without libsodium"
        );
        KeyPair::generate().unwrap();
    }

    #[test]
    fn z85_matches_libzmq_and_rfc_32() {
        // The test vector of RFC 32 (8 bytes), padded to a key's length with itself.
        let mut bytes = [0u8; KEY_LEN];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&[0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]);
        }
        let text = z85_encode(&bytes);
        assert_eq!(&text[..10], "HelloWorld");
        assert_eq!(text, zmq::z85_encode(&bytes).unwrap());
        assert_eq!(z85_decode(&text), Some(bytes));
        assert_eq!(z85_decode(&text[1..]), None, "too short");
        assert_eq!(z85_decode(&text.replace('H', "\"")), None, "not Z85");
        assert_eq!(z85_decode(&"#".repeat(40)), None, "over 2^32 per group");
    }

    #[test]
    fn a_secret_key_gives_back_its_public_key() {
        let pair = KeyPair::generate().unwrap();
        let again = KeyPair::from_secret(*pair.secret()).unwrap();
        assert_eq!(again.public(), pair.public());
        assert!(!format!("{pair:?}").contains(&z85_encode(pair.secret())));
    }

    #[test]
    fn key_files_round_trip_with_owner_only_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = (dir.path().join("a.key"), dir.path().join("a.pub"));
        let pair = KeyPair::generate().unwrap();
        write_key_pair(&pair, &secret, &public).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&secret), 0o600);
        assert_eq!(mode(&public), 0o644);
        assert_eq!(
            std::fs::read_to_string(&public).unwrap(),
            format!("{}\n", pair.public())
        );
        assert_eq!(read_secret_key(&secret).unwrap().public(), pair.public());
        assert_eq!(read_public_key(&public).unwrap(), pair.public());

        // Never overwritten, and nothing half-written is left by the refusal.
        let other = KeyPair::generate().unwrap();
        let err = write_key_pair(&other, &secret, &dir.path().join("b.pub")).unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
        assert!(!dir.path().join("b.pub").exists());
        assert_eq!(read_secret_key(&secret).unwrap().public(), pair.public());

        // A secret key others can read is refused, with the fix in the message.
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_secret_key(&secret).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("a.key"), "{err}");
    }

    #[test]
    fn allow_lists_from_files_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<PublicKey> = (0..3)
            .map(|_| KeyPair::generate().unwrap().public())
            .collect();
        let folder = dir.path().join("allowed");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("w1.pub"), format!("{}\n", keys[0])).unwrap();
        std::fs::write(folder.join("w2.pub"), format!("{}\n", keys[1])).unwrap();
        std::fs::write(folder.join("notes.txt"), "not a key\n").unwrap();
        let any = |ks: &[PublicKey]| -> AllowedKeys { ks.iter().map(|k| (*k, None)).collect() };
        let got = read_allow_list(&folder).unwrap();
        assert_eq!(got, any(&keys[..2]));

        let file = dir.path().join("list");
        std::fs::write(
            &file,
            format!("# watchers\n{}\n\n  {}  \n# end\n", keys[1], keys[2]),
        )
        .unwrap();
        assert_eq!(read_allow_list(&file).unwrap(), any(&keys[1..]));

        std::fs::write(&file, format!("{}\nnot-a-key\n", keys[0])).unwrap();
        let err = read_allow_list(&file).unwrap_err().to_string();
        assert!(err.contains(":2: not a CURVE key"), "{err}");

        // A watcher key may be restricted to volumes; `/` is the root volume.
        std::fs::write(
            &file,
            format!("{} volumes=photos,/\n{}\n", keys[0], keys[1]),
        )
        .unwrap();
        let got = read_allow_list(&file).unwrap();
        let restricted: BTreeSet<String> = ["/".to_string(), "photos".to_string()].into();
        assert_eq!(got[&keys[0]], Some(restricted));
        assert_eq!(got[&keys[1]], None);
        for (line, why) in [
            (format!("{} volumes=a/b", keys[0]), "volumes="),
            (format!("{} photos", keys[0]), "only volumes="),
            (format!("{} volumes=a volumes=b", keys[0]), "one volumes="),
        ] {
            std::fs::write(&file, line).unwrap();
            let err = read_allow_list(&file).unwrap_err().to_string();
            assert!(err.contains(":1: ") && err.contains(why), "{err}");
        }
        assert!(read_allow_list(&dir.path().join("missing")).is_err());
    }
}
