//! The file system the kernel sees: `fuser::Filesystem` over the views, the inodes and the
//! content cache. Read-only in every way: each call that would change something answers
//! `EROFS` (the mount is also read-only for the kernel, which refuses most of them first).

use crate::cache::{Cache, Content, Found};
use crate::inodes::{Inodes, Known, ViewId, HISTORY, MAIN, ROOT};
use crate::link::Fetcher;
use crate::tree::{join, Node, Tree};
use crate::views::{PastError, Views};
use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use schema::limits::INLINE_MAX;
use schema::Entry;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// How long the kernel may keep a name and its attributes of the tree that follows the store;
/// with the refresh, this bounds how late a change shows.
const TTL: Duration = Duration::from_secs(1);

/// The same for the trees of an instant (`--at`, `.history/TIME/`), which do not change.
const PAST_TTL: Duration = Duration::from_secs(60);

/// The name of the folder of views of the past at the mount's root.
pub const HISTORY_DIR: &str = ".history";

/// Small files after an opened one, in its folder, fetched ahead (a `cp -r` reads them next).
const PREFETCH_FILES: usize = 256;

/// Block size `stat` shows: the size `cp` and `cat` read in.
const BLOCK: u32 = 128 * 1024;

/// One open file: the version it opened, its content, and the kernel's handle of the content's
/// file when the kernel reads it directly (passthrough).
struct Open {
    entry: Entry,
    content: Arc<Content>,
    backing: Option<Arc<BackingId>>,
}

type OpenFiles = Arc<Mutex<HashMap<u64, Open>>>;

/// The dfs tree as a read-only file system.
pub struct DfsFs {
    views: Arc<Views>,
    inodes: Mutex<Inodes>,
    cache: Arc<Cache>,
    fetcher: Arc<Fetcher>,
    open: OpenFiles,
    next_fh: AtomicU64,
    /// Whether large files are opened in passthrough: the kernel then reads the verified
    /// content's cache file itself, with no copy through this process.
    passthrough: Arc<AtomicBool>,
    uid: u32,
    gid: u32,
    /// When the mount started: the times of folders with no files.
    started: SystemTime,
    /// The generation of the main tree the inodes were last pruned for.
    pruned: AtomicU64,
}

/// A path's place once resolved.
enum Place {
    /// `.history/`.
    History,
    /// A folder or file of a view.
    Node(Known),
}

impl DfsFs {
    /// The file system over `views`, reading contents through `fetcher` into `cache`; large
    /// files in passthrough when `passthrough` and the kernel allow.
    pub fn new(
        views: Arc<Views>,
        cache: Arc<Cache>,
        fetcher: Arc<Fetcher>,
        passthrough: bool,
    ) -> DfsFs {
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        DfsFs {
            views,
            inodes: Mutex::new(Inodes::default()),
            cache,
            fetcher,
            open: Arc::new(Mutex::new(HashMap::new())),
            next_fh: AtomicU64::new(1),
            passthrough: Arc::new(AtomicBool::new(passthrough)),
            uid,
            gid,
            started: SystemTime::now(),
            pruned: AtomicU64::new(0),
        }
    }

    fn inodes(&self) -> MutexGuard<'_, Inodes> {
        self.inodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_files(&self) -> MutexGuard<'_, HashMap<u64, Open>> {
        lock(&self.open)
    }

    /// Drops the inodes the kernel no longer holds whose place is gone, once per listing of
    /// the main tree (looked at on each lookup).
    fn prune(&self) {
        let generation = self.views.generation();
        if self.pruned.swap(generation, Ordering::Relaxed) == generation {
            return;
        }
        let main = self.views.main();
        let views = &self.views;
        self.inodes().retain(|k| {
            if k.view != MAIN {
                return views.exists(k.view);
            }
            match (main.get(&k.path), &k.file) {
                (Some(Node::Dir { .. }), None) => true,
                (Some(Node::File(now)), Some(e)) => {
                    now.version == e.version && now.blake3 == e.blake3
                }
                _ => false,
            }
        });
    }

    fn ttl(&self, view: ViewId) -> &'static Duration {
        if view == MAIN && self.views.at.is_none() {
            &TTL
        } else {
            &PAST_TTL
        }
    }

    fn place(&self, ino: u64) -> Option<Place> {
        if ino == HISTORY {
            return Some(Place::History);
        }
        self.inodes().get(ino).cloned().map(Place::Node)
    }

    fn attr(&self, ino: u64, node: Option<&Node>, file: Option<&Entry>) -> FileAttr {
        let (kind, size, perm, mtime) = match (file, node) {
            (Some(e), _) => (
                FileType::RegularFile,
                e.size,
                0o444,
                schema::time::from_ns(e.modified),
            ),
            (None, Some(Node::Dir { modified, .. })) if *modified > 0 => (
                FileType::Directory,
                0,
                0o555,
                schema::time::from_ns(*modified),
            ),
            _ => (FileType::Directory, 0, 0o555, self.started),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        }
    }

    /// The attributes of a folder of `view` at `path`.
    fn dir_attr(&self, ino: u64, tree: Option<&Tree>, path: &str) -> FileAttr {
        self.attr(ino, tree.and_then(|t| t.get(path)), None)
    }

    /// The child `name` of the folder `parent`: its inode and attributes.
    fn child(&self, parent: u64, name: &str) -> Result<(u64, FileAttr, ViewId), Errno> {
        match self.place(parent) {
            None => Err(Errno::ENOENT),
            Some(Place::History) => {
                let view = self.views.past(name).map_err(|e| match e {
                    PastError::NotATime => Errno::ENOENT,
                    PastError::Listing(why) => {
                        tracing::warn!("{HISTORY_DIR}/{name}: {why}");
                        Errno::EIO
                    }
                })?;
                let tree = self.views.tree(view);
                let ino = self.inodes().ino(view, "", None);
                Ok((ino, self.dir_attr(ino, tree.as_deref(), ""), view))
            }
            Some(Place::Node(k)) => {
                if parent == ROOT && name == HISTORY_DIR {
                    return Ok((HISTORY, self.attr(HISTORY, None, None), MAIN));
                }
                let tree = self.views.tree(k.view).ok_or(Errno::ENOENT)?;
                let path = join(&k.path, name);
                match tree.get(&path) {
                    Some(Node::File(e)) => {
                        let ino = self.inodes().ino(k.view, &path, Some(e));
                        Ok((ino, self.attr(ino, None, Some(e)), k.view))
                    }
                    Some(node @ Node::Dir { .. }) => {
                        let ino = self.inodes().ino(k.view, &path, None);
                        Ok((ino, self.attr(ino, Some(node), None), k.view))
                    }
                    None => Err(Errno::ENOENT),
                }
            }
        }
    }

    /// Has the small files after `entry` in its folder fetched ahead, unless cached.
    fn prefetch_after(&self, k: &Known, entry: &Entry) {
        let Some(tree) = self.views.tree(k.view) else {
            return;
        };
        let parent = match k.path.rfind('/') {
            Some(i) => &k.path[..i],
            None => "",
        };
        let Some(Node::Dir { children, .. }) = tree.get(parent) else {
            return;
        };
        let leaf = &k.path[parent.len() + usize::from(!parent.is_empty())..];
        let start = match children.binary_search_by(|c| (*c.name).cmp(leaf)) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        // Asked for in runs, not one by one: only when the file a quarter of the run ahead is not
        // cached yet are the next files asked for, so the workers get them in full batches.
        let end = children.len().min(start + PREFETCH_FILES);
        let ahead = children[start..end]
            .iter()
            .filter(|c| !c.dir)
            .nth(PREFETCH_FILES / 4);
        if let Some(c) = ahead {
            match tree.get(&join(parent, &c.name)) {
                Some(Node::File(e)) if self.cache.has(&e.blake3) => return,
                _ => {}
            }
        }
        for c in children[start..end].iter().filter(|c| !c.dir) {
            let Some(Node::File(e)) = tree.get(&join(parent, &c.name)) else {
                continue;
            };
            if e.size > INLINE_MAX || e.blake3 == entry.blake3 || self.cache.has(&e.blake3) {
                continue;
            }
            if let Found::New(content) = self.cache.obtain(e) {
                self.fetcher.prefetch(e, content);
            }
        }
    }

    /// The content of `entry`, asked for now when it is not cached.
    fn content(&self, entry: &Entry) -> Arc<Content> {
        match self.cache.obtain(entry) {
            Found::Cached(c) => c,
            Found::New(c) => {
                self.fetcher.demand(entry, c.clone());
                c
            }
        }
    }
}

impl Filesystem for DfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(1 << 20);
        // Passthrough (Linux 6.9 and later, as root): the cache files are on a local file
        // system, one level of stacking.
        let on = self.passthrough.load(Ordering::Relaxed)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        tracing::debug!(passthrough = on, "kernel connection set up");
        self.passthrough.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        self.prune();
        match self.child(parent.0, name) {
            Ok((ino, attr, view)) => {
                self.inodes().looked_up(ino);
                reply.entry(self.ttl(view), &attr, Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(fh) = fh {
            if let Some(open) = self.open_files().get(&fh.0) {
                let attr = self.attr(ino.0, None, Some(&open.entry));
                return reply.attr(&TTL, &attr);
            }
        }
        match self.place(ino.0) {
            None => reply.error(Errno::ENOENT),
            Some(Place::History) => reply.attr(&TTL, &self.attr(HISTORY, None, None)),
            Some(Place::Node(k)) => {
                let attr = match &k.file {
                    Some(e) => self.attr(ino.0, None, Some(e)),
                    None => self.dir_attr(ino.0, self.views.tree(k.view).as_deref(), &k.path),
                };
                reply.attr(self.ttl(k.view), &attr);
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let mut fixed: Vec<(u64, String)> = vec![(ino.0, ".".into()), (ROOT, "..".into())];
        let (tree, k) = match self.place(ino.0) {
            None => return reply.error(Errno::ENOENT),
            Some(Place::History) => {
                let mut inodes = self.inodes();
                for (name, view, _) in self.views.past_names() {
                    fixed.push((inodes.ino(view, "", None), name));
                }
                drop(inodes);
                for (i, (child, name)) in fixed.into_iter().enumerate().skip(skip) {
                    if reply.add(INodeNo(child), (i + 1) as u64, FileType::Directory, name) {
                        break;
                    }
                }
                return reply.ok();
            }
            Some(Place::Node(k)) => {
                if k.file.is_some() {
                    return reply.error(Errno::ENOTDIR);
                }
                match self.views.tree(k.view) {
                    Some(tree) => (tree, k),
                    None => return reply.error(Errno::ENOENT),
                }
            }
        };
        let Some(Node::Dir { children, .. }) = tree.get(&k.path) else {
            return reply.error(Errno::ENOENT);
        };
        let n = fixed.len();
        for (i, (child, name)) in fixed.into_iter().enumerate().skip(skip) {
            if reply.add(INodeNo(child), (i + 1) as u64, FileType::Directory, name) {
                return reply.ok();
            }
        }
        // Only the rows this call returns get inodes.
        let mut inodes = self.inodes();
        for (j, c) in children.iter().enumerate().skip(skip.saturating_sub(n)) {
            let path = join(&k.path, &c.name);
            let (child, kind) = match tree.get(&path) {
                Some(Node::File(e)) => (inodes.ino(k.view, &path, Some(e)), FileType::RegularFile),
                _ => (inodes.ino(k.view, &path, None), FileType::Directory),
            };
            if reply.add(INodeNo(child), (n + j + 1) as u64, kind, &*c.name) {
                break;
            }
        }
        drop(inodes);
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        let Some(Place::Node(k)) = self.place(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(entry) = k.file.clone() else {
            return reply.error(Errno::EISDIR);
        };
        let content = self.content(&entry);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if entry.size <= INLINE_MAX {
            self.prefetch_after(&k, &entry);
        } else if self.passthrough.load(Ordering::Relaxed) {
            // Answered once the content is here and verified: the kernel then reads its file.
            let (open, passthrough, held) =
                (self.open.clone(), self.passthrough.clone(), content.clone());
            content.when_settled(Box::new(move |settled| {
                let body = match settled {
                    Ok(body) => body,
                    Err(f) => return reply.error(f.errno),
                };
                let backing = match held.backing(body, |file| reply.open_backing(file)) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        if passthrough.swap(false, Ordering::Relaxed) {
                            tracing::warn!(
                                "the kernel refused passthrough ({e}); files are read through this process"
                            );
                        }
                        None
                    }
                };
                let opened = Open {
                    entry,
                    content: held,
                    backing: backing.clone(),
                };
                lock(&open).insert(fh, opened);
                match backing {
                    Some(id) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id),
                    None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
                }
            }));
            return;
        }
        self.open_files().insert(
            fh,
            Open {
                entry,
                content,
                backing: None,
            },
        );
        // An inode's bytes never change (a new version is a new inode): the kernel may keep them.
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        // The open files' table is never held while a content's state is looked at: a fetch
        // worker settling a content takes them the other way round.
        let Some((entry, content)) = self
            .open_files()
            .get(&fh.0)
            .map(|o| (o.entry.clone(), o.content.clone()))
        else {
            return reply.error(Errno::EBADF);
        };
        if offset >= entry.size {
            return reply.data(&[]);
        }
        let content = if content.retry() {
            // Asked for again: the broker may be back.
            let fresh = self.content(&entry);
            if let Some(o) = self.open_files().get_mut(&fh.0) {
                o.content = fresh.clone();
            }
            fresh
        } else {
            content
        };
        content.read(offset, size, reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let closed = self.open_files().remove(&fh.0);
        reply.ok();
        if closed.is_some_and(|o| {
            drop(o.backing);
            Arc::strong_count(&o.content) <= 2
        }) {
            // No other open file reads it (the cache holds the other reference).
            self.cache.trim();
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // The kernel checks the mode bits (default_permissions); writes are refused at open.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let tree = self.views.main();
        let blocks = tree.bytes().div_ceil(u64::from(BLOCK));
        reply.statfs(blocks, 0, 0, tree.files(), 0, BLOCK, 255, BLOCK);
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
}

fn lock(open: &OpenFiles) -> MutexGuard<'_, HashMap<u64, Open>> {
    open.lock().unwrap_or_else(|p| p.into_inner())
}
