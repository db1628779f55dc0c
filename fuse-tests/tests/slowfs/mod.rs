//! A FUSE file system whose `open`, `getattr`, `read` and `readdir` stall for a chosen time,
//! like a disk spinning up or a network file system that hangs: the proof that file operations
//! never hold the loop. Its files live in memory; file `NAME` of size `N` holds the bytes of
//! `pattern(NAME, N)` until written (`write` and truncation work, and stall for their own
//! chosen time). It mounts with `mount(2)` directly (as root, no `fusermount`) and unmounts
//! when dropped.
#![allow(dead_code)]

#[path = "../../../tests/skip/mod.rs"]
mod skip;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackgroundSession, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, INodeNo, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::time::SystemTime;

/// The deterministic bytes of a file.
pub fn pattern(name: &str, len: usize) -> Vec<u8> {
    let seed = name
        .bytes()
        .fold(0x9e37_79b9u32, |h, b| h.rotate_left(5) ^ u32::from(b));
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed).to_le_bytes()[1])
        .collect()
}

struct Files {
    /// (name, contents); inode = index + 2 (1 is the root directory).
    files: Mutex<Vec<(String, Vec<u8>)>>,
    stall_ns: Arc<AtomicU64>,
    write_stall_ns: Arc<AtomicU64>,
    flush_stall_ns: Arc<AtomicU64>,
}

fn sleep_ns(stall: &AtomicU64) {
    let ns = stall.load(Ordering::Relaxed);
    if ns > 0 {
        std::thread::sleep(Duration::from_nanos(ns));
    }
}

impl Files {
    fn stall(&self) {
        sleep_ns(&self.stall_ns)
    }

    fn files(&self) -> MutexGuard<'_, Vec<(String, Vec<u8>)>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm) = match ino {
            1 => (FileType::Directory, 0, 0o755),
            n => (
                FileType::RegularFile,
                self.files().get(n as usize - 2)?.1.len() as u64,
                0o644,
            ),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

/// Attributes are never cached, so every `stat` asks (and stalls).
const TTL: Duration = Duration::ZERO;

impl Filesystem for Files {
    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = (u64::from(parent) == 1)
            .then(|| self.files().iter().position(|(n, _)| OsStr::new(n) == name))
            .flatten();
        match found.and_then(|i| self.attr(i as u64 + 2)) {
            Some(attr) => reply.entry(&TTL, &attr, fuser::Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _: &Request, ino: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        self.stall();
        match self.attr(u64::from(ino)) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _: &Request, _: INodeNo, _: OpenFlags, reply: ReplyOpen) {
        self.stall();
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        size: u32,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.stall();
        let files = self.files();
        let Some((_, data)) = files.get(u64::from(ino) as usize - 2) else {
            return reply.error(Errno::ENOENT);
        };
        let start = (offset as usize).min(data.len());
        let end = (start + size as usize).min(data.len());
        reply.data(&data[start..end]);
    }

    fn write(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        data: &[u8],
        _: WriteFlags,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        sleep_ns(&self.write_stall_ns);
        let mut files = self.files();
        let Some((_, contents)) = files.get_mut(u64::from(ino) as usize - 2) else {
            return reply.error(Errno::ENOENT);
        };
        let end = offset as usize + data.len();
        if contents.len() < end {
            contents.resize(end, 0);
        }
        contents[offset as usize..end].copy_from_slice(data);
        reply.written(data.len() as u32);
    }

    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        // Unimplemented (the kernel then stops asking) unless a stall is set.
        match self.flush_stall_ns.load(Ordering::Relaxed) {
            0 => reply.error(Errno::ENOSYS),
            _ => {
                sleep_ns(&self.flush_stall_ns);
                reply.ok()
            }
        }
    }

    fn setattr(
        &self,
        _: &Request,
        ino: INodeNo,
        _: Option<u32>,
        _: Option<u32>,
        _: Option<u32>,
        size: Option<u64>,
        _: Option<TimeOrNow>,
        _: Option<TimeOrNow>,
        _: Option<SystemTime>,
        _: Option<FileHandle>,
        _: Option<SystemTime>,
        _: Option<SystemTime>,
        _: Option<SystemTime>,
        _: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if let Some(size) = size {
            sleep_ns(&self.write_stall_ns);
            if let Some((_, contents)) = self.files().get_mut(u64::from(ino) as usize - 2) {
                contents.resize(size as usize, 0);
            }
        }
        match self.attr(u64::from(ino)) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.stall();
        if u64::from(ino) != 1 {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (1, FileType::Directory, ".".to_string()),
            (1, FileType::Directory, "..".to_string()),
        ]
        .into_iter()
        .chain(
            (self.files().iter().enumerate())
                .map(|(i, (name, _))| (i as u64 + 2, FileType::RegularFile, name.to_string()))
                .collect::<Vec<_>>(),
        );
        for (i, (ino, kind, name)) in entries.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }
}

/// A mounted slow file system; unmounted when dropped.
pub struct SlowFs {
    pub root: PathBuf,
    stall_ns: Arc<AtomicU64>,
    write_stall_ns: Arc<AtomicU64>,
    flush_stall_ns: Arc<AtomicU64>,
    _session: BackgroundSession,
}

impl SlowFs {
    /// Mounts `files` (name, size) under a fresh directory named `name`, without stalls yet.
    pub fn mount(name: &str, files: &[(&str, usize)]) -> std::io::Result<SlowFs> {
        // Tests have cargo's per-target temp dir; the benchmark uses the system's.
        let tmp = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let root = tmp.join("slowfs").join(name);
        let _ = unmount(&root);
        std::fs::create_dir_all(&root)?;
        let stall_ns = Arc::new(AtomicU64::new(0));
        let write_stall_ns = Arc::new(AtomicU64::new(0));
        let flush_stall_ns = Arc::new(AtomicU64::new(0));
        let fs = Files {
            files: Mutex::new(
                (files.iter())
                    .map(|&(name, len)| (name.to_string(), pattern(name, len)))
                    .collect(),
            ),
            stall_ns: stall_ns.clone(),
            write_stall_ns: write_stall_ns.clone(),
            flush_stall_ns: flush_stall_ns.clone(),
        };
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("aioloop-slowfs".into())];
        // Stalls overlap across requests, as on a real slow device serving a queue.
        config.n_threads = Some(16);
        let session = fuser::spawn_mount(fs, &root, &config)?;
        Ok(SlowFs {
            root,
            stall_ns,
            write_stall_ns,
            flush_stall_ns,
            _session: session,
        })
    }

    /// Mounts as [`mount`](Self::mount) does, or, where this user may not mount a FUSE file
    /// system (not root and no `fusermount3`, or no `/dev/fuse`), skips the calling test.
    pub fn mount_or_skip(name: &str, files: &[(&str, usize)]) -> Option<SlowFs> {
        use std::io::ErrorKind::{NotFound, PermissionDenied};
        match SlowFs::mount(name, files) {
            Ok(fs) => Some(fs),
            Err(e) if matches!(e.kind(), PermissionDenied | NotFound) => {
                skip::skip(format_args!(
                    "cannot mount the slow FUSE file system ({e}): it needs root and /dev/fuse"
                ));
                None
            }
            Err(e) => panic!("cannot mount the slow FUSE file system: {e}"),
        }
    }

    /// Every later `open`, `getattr`, `read` and `readdir` stalls `stall`.
    pub fn set_stall(&self, stall: Duration) {
        self.stall_ns
            .store(stall.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Every later `write` and truncation stalls `stall`.
    pub fn set_write_stall(&self, stall: Duration) {
        self.write_stall_ns
            .store(stall.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Every later `flush` (sent by each `close`) stalls `stall`. Set it before the first
    /// close: until then `flush` is unimplemented, and the kernel stops asking for good.
    pub fn set_flush_stall(&self, stall: Duration) {
        self.flush_stall_ns
            .store(stall.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

impl Drop for SlowFs {
    fn drop(&mut self) {
        self.set_stall(Duration::ZERO);
        self.set_write_stall(Duration::ZERO);
        self.set_flush_stall(Duration::ZERO);
    }
}

fn unmount(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C path; a lazy unmount of a stale mount left by an earlier run.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
