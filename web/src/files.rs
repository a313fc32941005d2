//! Downloads: one version of a file, or every file of a folder as a tar archive. Nothing
//! leaves before it matched its BLAKE3: a file is received whole (into memory when small, into
//! an unnamed temporary file otherwise) and verified, then sent, so memory stays bounded
//! whatever the sizes and a corrupt file is an error, never its bytes.

use disk::atomic::TempFile;
use fetcher::client::Client;
use fetcher::error::FetchError;
use fetcher::transfer::Sink;
use net::security::ClientAuth;
use schema::limits::INLINE_MAX;
use schema::Entry;
use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::rc::Rc;

/// How a worker reaches the broker.
pub struct Link {
    pub endpoint: String,
    pub auth: ClientAuth,
    pub timeout: f64,
    pub stop: daemon::Shutdown,
}

impl Link {
    /// A connected client.
    pub fn connect(&self) -> Result<Client, FetchError> {
        fetcher::client::connect(&self.endpoint, &self.auth, self.timeout, self.stop.clone())
    }
}

/// A verified content, ready to send.
pub enum Verified {
    Memory(Vec<u8>),
    File(File),
}

impl Verified {
    /// The bytes as a reader from their start.
    pub fn reader(self) -> Box<dyn Read + Send> {
        match self {
            Verified::Memory(v) => Box::new(std::io::Cursor::new(v)),
            Verified::File(f) => Box::new(f),
        }
    }
}

/// Receives version `version` of `name` (the current one when `None`) whole and verified;
/// returns its entry and content.
pub fn fetch(
    client: &mut Client,
    name: &str,
    version: Option<u64>,
) -> Result<(Entry, Verified), FetchError> {
    let started = fetcher::transfer::request(client, name, version)?;
    let entry = started.entry.clone();
    if entry.size <= INLINE_MAX {
        let mut sink = MemorySink(Vec::with_capacity(entry.size as usize));
        started.receive(client, &mut sink)?;
        return Ok((entry, Verified::Memory(sink.0)));
    }
    let temp = match TempFile::in_dir(&std::env::temp_dir()) {
        Ok(t) => t,
        Err(e) => {
            started.abandon(client);
            return Err(FetchError::Write {
                path: std::env::temp_dir(),
                source: std::io::Error::other(e.to_string()),
            });
        }
    };
    let mut file = temp
        .file()
        .try_clone()
        .map_err(|source| FetchError::Write {
            path: std::env::temp_dir(),
            source,
        })?;
    {
        let mut sink = FileSink(std::io::BufWriter::with_capacity(1 << 20, &file));
        started.receive(client, &mut sink)?;
        sink.0.flush().map_err(write_error)?;
    }
    file.rewind().map_err(write_error)?;
    // The unnamed file lives as long as `file` is open.
    drop(temp);
    Ok((entry, Verified::File(file)))
}

fn write_error(source: std::io::Error) -> FetchError {
    FetchError::Write {
        path: PathBuf::from("the temporary folder"),
        source,
    }
}

struct MemorySink(Vec<u8>);

impl Sink for MemorySink {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

struct FileSink<'a>(std::io::BufWriter<&'a File>);

impl Sink for FileSink<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        self.0.write_all(bytes).map_err(write_error)
    }
}

/// A tar archive of `entries` (paths relative to the folder archived), made as it is read: each
/// file is fetched and verified before its header and bytes go out. A file that cannot be
/// (corrupt, gone) is left out and named in a last entry, `dfs-archive-errors.txt`, and in the
/// log; a broken link to the broker ends the archive early (the download is then incomplete,
/// which the browser shows).
pub struct Archive<'a> {
    client: &'a mut Client,
    /// (stored name, path in the archive, version, modification time).
    files: std::vec::IntoIter<(String, String, u64, i64)>,
    /// Writes headers (long names included) and the end of the archive into `out`.
    tar: tar::Builder<Pending>,
    out: Rc<RefCell<Vec<u8>>>,
    pos: usize,
    body: Option<(Box<dyn Read + Send>, u64)>,
    /// Zero bytes after the current body, to the next 512-byte block.
    pad: usize,
    errors: Vec<String>,
    done: bool,
}

impl<'a> Archive<'a> {
    /// An archive of `entries`, each named by the part of its name after `folder`.
    pub fn new(client: &'a mut Client, folder: &str, entries: &[Entry]) -> Archive<'a> {
        let files: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    e.name[folder.len()..].to_string(),
                    e.version,
                    e.modified,
                )
            })
            .collect();
        let out = Rc::new(RefCell::new(Vec::with_capacity(64 * 1024)));
        Archive {
            client,
            files: files.into_iter(),
            tar: tar::Builder::new(Pending(out.clone())),
            out,
            pos: 0,
            body: None,
            pad: 0,
            errors: Vec::new(),
            done: false,
        }
    }

    /// Fills `out` with the next piece: the rest of a body, the next header, or the end.
    fn refill(&mut self) -> std::io::Result<()> {
        self.out.borrow_mut().clear();
        self.pos = 0;
        if let Some((reader, left)) = &mut self.body {
            let want = (*left).min(256 * 1024) as usize;
            let mut out = self.out.borrow_mut();
            out.resize(want, 0);
            reader.read_exact(&mut out)?;
            *left -= want as u64;
            if *left == 0 {
                self.body = None;
                let total = out.len() + self.pad;
                out.resize(total, 0);
            }
            return Ok(());
        }
        for (name, path, version, modified) in self.files.by_ref() {
            match fetch(self.client, &name, Some(version)) {
                Ok((entry, content)) => {
                    let mut header = tar::Header::new_gnu();
                    header.set_size(entry.size);
                    header.set_mode(0o644);
                    let secs = modified.div_euclid(1_000_000_000);
                    header.set_mtime(u64::try_from(secs).unwrap_or(0));
                    header.set_entry_type(tar::EntryType::Regular);
                    // The header alone: the body follows from `content`, padded to a block.
                    self.tar.append_data(&mut header, &path, std::io::empty())?;
                    self.pad = ((512 - entry.size % 512) % 512) as usize;
                    if entry.size > 0 {
                        self.body = Some((content.reader(), entry.size));
                    }
                    return Ok(());
                }
                Err(e) if e.is_link_failure() => {
                    tracing::warn!("archive: {name}: {e}; the archive ends here");
                    return Err(std::io::Error::other(e.to_string()));
                }
                Err(e) => {
                    tracing::error!("archive: {name} (version {version}) left out: {e}");
                    self.errors.push(format!("{path}: left out: {e}"));
                }
            }
        }
        if !self.done {
            self.done = true;
            if !self.errors.is_empty() {
                let text = self.errors.join("\n") + "\n";
                let mut header = tar::Header::new_gnu();
                header.set_size(text.len() as u64);
                header.set_mode(0o644);
                header.set_entry_type(tar::EntryType::Regular);
                self.tar
                    .append_data(&mut header, "dfs-archive-errors.txt", text.as_bytes())?;
            }
            self.tar.finish()?;
        }
        Ok(())
    }
}

/// Where the archive's builder writes: the piece `Archive::read` hands out next.
struct Pending(Rc<RefCell<Vec<u8>>>);

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Read for Archive<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            {
                let out = self.out.borrow();
                if self.pos < out.len() {
                    let n = buf.len().min(out.len() - self.pos);
                    buf[..n].copy_from_slice(&out[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            if self.done && self.body.is_none() {
                return Ok(0);
            }
            self.refill()?;
        }
    }
}
