//! An S3 bucket as the node sees it (docs/CONTRACT.md §9, `--backend s3://BUCKET[/PREFIX]`):
//! objects put whole with their metadata, read back with it, listed by prefix, deleted.
//!
//! A blocking face over `object_store`'s S3 client, whose calls are async: the node's threads
//! call these methods, and a small runtime owned by the bucket runs the requests. Endpoint and
//! credentials follow the AWS conventions (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`); an explicit endpoint (`--s3-endpoint`) overrides
//! the variable. A put returns only once the store has acknowledged the object, and S3 replaces
//! an object whole: a reader sees the old or the new one, never a mix.

use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, WriteMultipart,
};
use schema::Hash;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::{Condvar, Mutex};

/// The user metadata of an object: `(name, value)` pairs, names without `x-amz-meta-`.
pub type Meta = Vec<(String, String)>;

/// What a `HEAD` tells of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    pub meta: Meta,
    /// When the store took the object, ns since the Unix epoch.
    pub stored: i64,
}

impl Head {
    fn of(r: &object_store::GetResult) -> Head {
        Head {
            size: r.meta.size,
            meta: Bucket::metadata(&r.attributes),
            stored: r.meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
        }
    }
}

/// The size of a multipart upload's parts, and the largest object put in one request. S3 wants
/// parts of at least 5 MiB (but the last).
pub const PART_SIZE: usize = 8 << 20;

/// Parts of one multipart upload in flight at once.
pub const PARTS_IN_FLIGHT: usize = 2;

/// Multipart uploads at once in the whole process; more wait their turn. With
/// [`PARTS_IN_FLIGHT`] and the part being filled, each holds at most 3 × [`PART_SIZE`].
pub const LARGE_PUTS: usize = 2;

/// `HEAD` requests in flight at once when a listing asks for many objects' metadata.
pub const HEADS_IN_FLIGHT: usize = 32;

/// The longest key S3 takes, in bytes.
pub const MAX_KEY: usize = 1024;

/// Why a bucket could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("bad backend {url:?}: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error("cannot start the S3 client: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{key:?} is not a key this backend can use: {why}")]
    BadKey { key: String, why: String },
    #[error("cannot read what goes to {0:?}: {1}")]
    Read(String, #[source] std::io::Error),
    #[error("{key:?}: the bytes read for the upload hash to {actual}, not {expected}; not stored")]
    Changed {
        key: String,
        expected: Hash,
        actual: Hash,
    },
    #[error("{key:?}: the store sent {got} of its {size} bytes")]
    Short { key: String, size: u64, got: u64 },
    #[error("S3 {what}: {source}")]
    S3 {
        what: String,
        #[source]
        source: object_store::Error,
    },
}

/// How to reach the store and sign for it. What is `None` comes from the environment
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, and the
/// other variables object_store reads).
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub key_id: Option<String>,
    pub secret: Option<String>,
}

/// One bucket (and key prefix in it) of an S3-compatible store, used through blocking calls.
pub struct Bucket {
    store: AmazonS3,
    /// The key prefix every key is below (empty, or ending without a slash).
    prefix: String,
    runtime: tokio::runtime::Runtime,
    /// Turns for the multipart uploads ([`LARGE_PUTS`]).
    large: Turns,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({}, prefix {:?})", self.store, self.prefix)
    }
}

impl Bucket {
    /// Opens `url` (`s3://BUCKET[/PREFIX]`) with what `access` gives and the AWS variables of
    /// the environment for the rest. Nothing is sent yet.
    pub fn open(url: &str, access: &Access) -> Result<Bucket, BucketError> {
        let bad = |why| BucketError::BadUrl {
            url: url.to_string(),
            why,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it must start with s3://"))?;
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            return Err(bad("it names no bucket"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            Path::parse(&prefix)
                .map_err(|_| bad("its prefix has an empty component or a control character"))?;
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(name);
        let endpoint = access
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(r) = &access.region {
            builder = builder.with_region(r);
        }
        if let Some(k) = &access.key_id {
            builder = builder.with_access_key_id(k);
        }
        if let Some(s) = &access.secret {
            builder = builder.with_secret_access_key(s);
        }
        if let Some(e) = endpoint {
            // A plain-HTTP endpoint is what a store on the same machine or network offers.
            builder = builder
                .with_allow_http(e.starts_with("http://"))
                .with_endpoint(e);
        }
        let store = builder.build().map_err(|source| BucketError::S3 {
            what: format!("configuration of {url}"),
            source,
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dfs-s3")
            .enable_all()
            .build()
            .map_err(BucketError::Runtime)?;
        Ok(Bucket {
            store,
            prefix,
            runtime,
            large: Turns::new(LARGE_PUTS),
        })
    }

    /// The object path of `key` below the prefix. A key must be a valid S3 key as object_store
    /// sees it: no empty, `.` or `..` component and no ASCII control character (dfs names
    /// already refuse the first three; see [`key_problem`]).
    fn path(&self, key: &str) -> Result<Path, BucketError> {
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        Path::parse(&full).map_err(|e| BucketError::BadKey {
            key: key.to_string(),
            why: e.to_string(),
        })
    }

    /// `key` without the prefix, as [`Bucket::list`] gives it.
    fn key_of(&self, path: &Path) -> String {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(&self.prefix)
                .map(|k| k.trim_start_matches('/'))
                .unwrap_or(full)
                .to_string()
        }
    }

    fn failed(what: String) -> impl FnOnce(object_store::Error) -> BucketError {
        move |source| BucketError::S3 { what, source }
    }

    fn attributes(meta: &[(&str, String)]) -> Attributes {
        let mut attributes = Attributes::new();
        for (k, v) in meta {
            attributes.insert(Attribute::Metadata(k.to_string().into()), v.clone().into());
        }
        attributes
    }

    fn metadata(attributes: &Attributes) -> Meta {
        attributes
            .iter()
            .filter_map(|(k, v)| match k {
                Attribute::Metadata(name) => Some((name.to_string(), v.to_string())),
                _ => None,
            })
            .collect()
    }

    /// Puts `bytes` as `key` with user metadata `meta` (`x-amz-meta-NAME: VALUE`), replacing
    /// any object there; returns once the store acknowledged it.
    pub fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        meta: &[(&str, String)],
    ) -> Result<(), BucketError> {
        let opts = PutOptions {
            attributes: Self::attributes(meta),
            ..PutOptions::default()
        };
        let path = self.path(key)?;
        self.runtime
            .block_on(self.store.put_opts(&path, PutPayload::from(bytes), opts))
            .map(|_| ())
            .map_err(Self::failed(format!("put {path}")))
    }

    /// Puts the first `size` bytes of `file` as `key` with `meta`: one request up to
    /// [`PART_SIZE`], else a multipart upload of [`PART_SIZE`] parts, at most
    /// [`PARTS_IN_FLIGHT`] at a time and at most [`LARGE_PUTS`] such uploads in the whole
    /// process, so that memory stays bounded whatever the file sizes. The bytes read are
    /// hashed on the way: unless they hash to `expected`, the upload is abandoned before it
    /// completes and the object is not replaced. Returns once the store acknowledged it.
    pub fn put_file(
        &self,
        key: &str,
        file: &File,
        size: u64,
        meta: &[(&str, String)],
        expected: Hash,
    ) -> Result<(), BucketError> {
        if size <= PART_SIZE as u64 {
            let mut bytes = vec![0; size as usize];
            file.read_exact_at(&mut bytes, 0)
                .map_err(|e| BucketError::Read(key.to_string(), e))?;
            let actual = Hash::of(&bytes);
            if actual != expected {
                return Err(BucketError::Changed {
                    key: key.to_string(),
                    expected,
                    actual,
                });
            }
            return self.put(key, bytes, meta);
        }
        let path = self.path(key)?;
        let _turn = self.large.take();
        let opts = PutMultipartOptions {
            attributes: Self::attributes(meta),
            ..PutMultipartOptions::default()
        };
        let what = format!("multipart put {path}");
        self.runtime.block_on(async {
            let upload = self
                .store
                .put_multipart_opts(&path, opts)
                .await
                .map_err(Self::failed(what.clone()))?;
            let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut hasher = blake3::Hasher::new();
            let mut offset = 0u64;
            let sent: Result<(), BucketError> = async {
                while offset < size {
                    parts
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(Self::failed(what.clone()))?;
                    let len = (size - offset).min(PART_SIZE as u64) as usize;
                    let mut bytes = vec![0; len];
                    file.read_exact_at(&mut bytes, offset)
                        .map_err(|e| BucketError::Read(key.to_string(), e))?;
                    hasher.update(&bytes);
                    parts.put(bytes.into());
                    offset += len as u64;
                }
                let actual = Hash::from(hasher.finalize());
                if actual != expected {
                    return Err(BucketError::Changed {
                        key: key.to_string(),
                        expected,
                        actual,
                    });
                }
                Ok(())
            }
            .await;
            match sent {
                Ok(()) => parts
                    .finish()
                    .await
                    .map(|_| ())
                    .map_err(Self::failed(what.clone())),
                Err(e) => {
                    // The parts sent so far are dropped by the store; the object is untouched.
                    let _ = parts.abort().await;
                    Err(e)
                }
            }
        })
    }

    /// The size and user metadata of `key`, or None if there is no such object.
    pub fn head(&self, key: &str) -> Result<Option<Head>, BucketError> {
        let path = self.path(key)?;
        let opts = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        match self.runtime.block_on(self.store.get_opts(&path, opts)) {
            Ok(r) => Ok(Some(Head::of(&r))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(BucketError::S3 {
                what: format!("head {path}"),
                source,
            }),
        }
    }

    /// The sizes and metadata of `keys`, asked [`HEADS_IN_FLIGHT`] at a time, in the order of
    /// `keys` (None for a key that is gone).
    pub fn head_many(&self, keys: &[String]) -> Result<Vec<Option<Head>>, BucketError> {
        let paths = keys
            .iter()
            .map(|k| self.path(k))
            .collect::<Result<Vec<_>, _>>()?;
        self.runtime.block_on(
            futures::stream::iter(paths.into_iter().map(|path| async move {
                let opts = GetOptions {
                    head: true,
                    ..GetOptions::default()
                };
                match self.store.get_opts(&path, opts).await {
                    Ok(r) => Ok(Some(Head::of(&r))),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(source) => Err(BucketError::S3 {
                        what: format!("head {path}"),
                        source,
                    }),
                }
            }))
            .buffered(HEADS_IN_FLIGHT)
            .try_collect(),
        )
    }

    /// Streams `key` to `sink` piece by piece (never the whole object in memory); returns its
    /// size and metadata, or None if there is no such object. `start` sees the size and
    /// metadata before the first byte.
    pub fn get_into(
        &self,
        key: &str,
        start: impl FnOnce(u64, &Meta) -> Result<(), BucketError>,
        mut sink: impl FnMut(&[u8]) -> Result<(), BucketError>,
    ) -> Result<Option<(u64, Meta)>, BucketError> {
        let path = self.path(key)?;
        let what = format!("get {path}");
        self.runtime.block_on(async {
            let r = match self.store.get(&path).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(source) => return Err(BucketError::S3 { what, source }),
            };
            let size = r.meta.size;
            let meta = Self::metadata(&r.attributes);
            start(size, &meta)?;
            let mut stream = r.into_stream();
            let mut got = 0u64;
            while let Some(piece) = stream
                .try_next()
                .await
                .map_err(Self::failed(what.clone()))?
            {
                got += piece.len() as u64;
                sink(&piece)?;
            }
            if got != size {
                return Err(BucketError::Short {
                    key: key.to_string(),
                    size,
                    got,
                });
            }
            Ok(Some((size, meta)))
        })
    }

    /// The bytes and user metadata of `key` (a small object), or None if there is none.
    pub fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Meta)>, BucketError> {
        let mut bytes = Vec::new();
        let got = self.get_into(
            key,
            |_, _| Ok(()),
            |piece| {
                bytes.extend_from_slice(piece);
                Ok(())
            },
        )?;
        Ok(got.map(|(_, meta)| (bytes, meta)))
    }

    /// Copies `from` to `to` inside the bucket (the store copies; no bytes pass through here),
    /// metadata included.
    pub fn copy(&self, from: &str, to: &str) -> Result<(), BucketError> {
        let (f, t) = (self.path(from)?, self.path(to)?);
        self.runtime
            .block_on(self.store.copy(&f, &t))
            .map_err(Self::failed(format!("copy {f} to {t}")))
    }

    /// Up to `max` keys below `dir` (a key prefix ending at a `/` boundary; "" for all) that
    /// sort after `after` (a full key), with their sizes, in key order.
    pub fn list_after(
        &self,
        dir: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<(String, u64)>, BucketError> {
        let prefix = match (self.prefix.is_empty(), dir.trim_end_matches('/')) {
            (true, "") => None,
            (false, "") => Path::parse(&self.prefix).ok(),
            (_, d) => Some(self.path(d)?),
        };
        let stream = match after {
            Some(a) => self.store.list_with_offset(prefix.as_ref(), &self.path(a)?),
            None => self.store.list(prefix.as_ref()),
        };
        let mut page: Vec<(String, u64)> = self
            .runtime
            .block_on(
                stream
                    .map_ok(|m| (self.key_of(&m.location), m.size))
                    .take(max)
                    .try_collect(),
            )
            .map_err(Self::failed(format!("list {dir:?}")))?;
        page.sort();
        Ok(page)
    }

    /// Every key below `dir` with its size, in key order.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, BucketError> {
        self.list_after(dir, None, usize::MAX)
    }

    /// Deletes `key` (nothing there is not an error).
    pub fn delete(&self, key: &str) -> Result<(), BucketError> {
        let path = self.path(key)?;
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(BucketError::S3 {
                what: format!("delete {path}"),
                source,
            }),
        }
    }
}

/// Why `name` cannot be an S3 key as this backend writes it, if it cannot: S3 listings cannot
/// carry ASCII control characters, and keys are at most [`MAX_KEY`] bytes.
pub fn key_problem(key: &str) -> Option<String> {
    if let Some(c) = key.chars().find(|c| c.is_ascii_control()) {
        return Some(format!(
            "holds the control character {c:?}, which an S3 key cannot carry"
        ));
    }
    if key.len() > MAX_KEY {
        return Some(format!(
            "makes an S3 key of {} bytes; S3 keys are at most {MAX_KEY}",
            key.len()
        ));
    }
    None
}

/// A counting gate: at most `n` holders at once, the others wait their turn.
#[derive(Debug)]
struct Turns {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Turns {
    fn new(n: usize) -> Turns {
        Turns {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    /// Waits for a turn; it ends when the returned guard is dropped.
    fn take(&self) -> Turn<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Turn(self)
    }
}

/// A turn taken from [`Turns`], given back on drop.
struct Turn<'a>(&'a Turns);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Access {
        Access {
            endpoint: Some("http://127.0.0.1:1".into()),
            ..Access::default()
        }
    }

    #[test]
    fn urls_that_name_no_bucket_are_refused_with_why() {
        for (url, why) in [
            ("http://x/y", "it must start with s3://"),
            ("s3://", "it names no bucket"),
            ("s3:///prefix", "it names no bucket"),
        ] {
            let e = Bucket::open(url, &local()).unwrap_err();
            assert!(e.to_string().contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn names_s3_cannot_carry_are_named_with_why() {
        assert!(key_problem("txt/a b [1] #~%.txt").is_none());
        assert!(key_problem("txt/a\tb.txt")
            .unwrap()
            .contains("control character"));
        let long = format!("txt/{}", "a".repeat(MAX_KEY));
        assert!(key_problem(&long).unwrap().contains("at most 1024"));
        let b = Bucket::open("s3://b", &local()).unwrap();
        // Characters object_store would percent-encode in Path::from stay as they are.
        assert_eq!(
            b.path("txt/a [1] #~%.txt").unwrap().as_ref(),
            "txt/a [1] #~%.txt"
        );
        assert!(b.path("txt/a\nb").is_err());
    }

    #[test]
    fn keys_go_below_the_prefix_and_come_back_without_it() {
        let b = Bucket::open("s3://b/some/prefix/", &local()).unwrap();
        let p = b.path("txt/a/b.txt").unwrap();
        assert_eq!(p.as_ref(), "some/prefix/txt/a/b.txt");
        assert_eq!(b.key_of(&p), "txt/a/b.txt");
        let top = Bucket::open("s3://b", &local()).unwrap();
        assert_eq!(top.path("mp3/x.mp3").unwrap().as_ref(), "mp3/x.mp3");
    }
}
