//! Entry names and in-root resolution.
//!
//! A tar entry name is cleaned by comparing components (never string prefixes): `.` and
//! empty components are dropped, `..`, absolute names, NUL bytes and over-long names are
//! refused. The entry's parent directory is then opened with `openat2(RESOLVE_IN_ROOT)`
//! relative to the layer root, so every symlink met on the way (absolute or `..`) is
//! clamped to the root, the way Docker's `FollowSymlinkInScope` does it, but race-free.
//! The final component is never resolved here: callers create it relative to the parent
//! fd with no-follow semantics.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use std::collections::VecDeque;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmodat, fstatat, mkdirat, FchmodatFlags, Mode, SFlag};

/// Longest entry name accepted, in bytes (Linux `PATH_MAX`).
pub(crate) const PATH_MAX: usize = libc::PATH_MAX as usize;

/// Longest component of an entry name, in bytes (Linux `NAME_MAX`): no Linux filesystem
/// holds a longer name, so GNU tar fails such a member with ENAMETOOLONG. Refusing it up
/// front (rather than where a driver tries to create it) gives one answer on every
/// driver: a whiteout `.wh.<name>` of a 252-255 byte name is such a component, which vfs
/// and overlay2 could apply (they delete, or make a 0/0 device under the plain name) but
/// aufs could not (its whiteout is that very file name).
const NAME_MAX: usize = 255;

/// Mode of directories created because an entry needs them but the tar has no entry for
/// them (Docker uses 0755 as well).
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Symlinks followed while creating an entry's parents before giving up (Linux's
/// own limit, MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// How often an `openat2` answering EAGAIN (a rename raced the in-root walk) is retried.
const OPENAT2_RETRIES: usize = 16;

/// Why an entry name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadName {
    Empty,
    DotDot,
    Nul,
    TooLong,
    ComponentTooLong,
}

impl BadName {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            BadName::Empty => "empty name",
            BadName::DotDot => "path contains a `..` component",
            BadName::Nul => "name contains a NUL byte",
            BadName::TooLong => "name longer than PATH_MAX",
            BadName::ComponentTooLong => "a path component longer than NAME_MAX (255 bytes)",
        }
    }
}

/// Cleans `raw` into `out` (components joined by single `/`, no `.`), or says why the
/// name is refused. An empty `out` means the layer root itself (`.`, `./`, `/`).
///
/// Leading slashes are dropped: an absolute name names the same path inside the layer,
/// as GNU tar ("Removing leading `/' from member names"), moby, containerd and umoci read
/// it (`ko` writes `/ko-app/...`). `..` components stay refused (GNU tar skips such
/// members too).
pub(crate) fn clean(raw: &[u8], out: &mut Vec<u8>) -> Result<(), BadName> {
    out.clear();
    if raw.is_empty() {
        return Err(BadName::Empty);
    }
    if raw.len() > PATH_MAX {
        return Err(BadName::TooLong);
    }
    if raw.contains(&0) {
        return Err(BadName::Nul);
    }
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(BadName::DotDot),
            _ if comp.len() > NAME_MAX => return Err(BadName::ComponentTooLong),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    Ok(())
}

/// Splits a cleaned, non-empty path into (parent, final name); the parent is empty for a
/// top-level name.
pub(crate) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Number of components of a cleaned path (0 for the root).
pub(crate) fn depth(path: &[u8]) -> usize {
    if path.is_empty() {
        0
    } else {
        1 + path.iter().filter(|b| **b == b'/').count()
    }
}

/// Opens directories inside the layer root, remembering the last parent opened
/// (consecutive tar entries nearly always share their directory).
///
/// The fast path is one `openat2(RESOLVE_IN_ROOT)`. Where openat2 is missing (kernel
/// before 5.6, or a seccomp filter answering ENOSYS) the same semantics come from
/// [`Resolver::walk`], which resolves one component at a time with `O_NOFOLLOW` and
/// follows symlinks itself, clamped to the root.
#[derive(Debug)]
pub(crate) struct Resolver {
    root: Rc<OwnedFd>,
    cache_path: Vec<u8>,
    cache_fd: Option<Rc<OwnedFd>>,
    use_openat2: bool,
}

impl Resolver {
    pub(crate) fn new(root: OwnedFd) -> Self {
        let use_openat2 = !matches!(
            open_in_root(root.as_fd(), b".", OFlag::O_PATH),
            Err(Errno::ENOSYS)
        );
        if !use_openat2 {
            tracing::debug!("openat2 unavailable: resolving entry paths component by component");
        }
        Resolver {
            root: Rc::new(root),
            cache_path: Vec::new(),
            cache_fd: None,
            use_openat2,
        }
    }

    /// Resolves without openat2 (tests of the fallback).
    #[cfg(test)]
    pub(crate) fn force_walk(&mut self) {
        self.use_openat2 = false;
    }

    /// The layer root directory (opened `O_RDONLY | O_DIRECTORY`).
    pub(crate) fn root(&self) -> &Rc<OwnedFd> {
        &self.root
    }

    /// Forgets the cached parent. Called whenever anything in the tree is removed or
    /// replaced, since the cached directory may have been (or hang below) it.
    pub(crate) fn invalidate(&mut self) {
        self.cache_fd = None;
    }

    /// Opens the directory `rel` (a cleaned path) in the root, creating missing
    /// directories on the way when `create`; `Ok(None)` when it is missing and not
    /// `create`. Errors are raw errnos; the caller names the entry.
    pub(crate) fn dir(&mut self, rel: &[u8], create: bool) -> Result<Option<Rc<OwnedFd>>, Errno> {
        if rel.is_empty() {
            return Ok(Some(self.root.clone()));
        }
        if let Some(fd) = &self.cache_fd {
            if self.cache_path == rel {
                return Ok(Some(fd.clone()));
            }
        }
        let Some(fd) = self.lookup(rel, create)? else {
            return Ok(None);
        };
        let fd = Rc::new(fd);
        self.cache_path.clear();
        self.cache_path.extend_from_slice(rel);
        self.cache_fd = Some(fd.clone());
        Ok(Some(fd))
    }

    /// Opens the directory `rel` (a cleaned path) only if every component of it is a
    /// real directory in the root (no symlink anywhere: `RESOLVE_NO_SYMLINKS`), caching
    /// it like [`Self::dir`]. `Ok(None)` when a component is missing, a symlink or not a
    /// directory: the caller then resolves the path in the merged view.
    pub(crate) fn dir_plain(&mut self, rel: &[u8]) -> Result<Option<Rc<OwnedFd>>, Errno> {
        if rel.is_empty() {
            return Ok(Some(self.root.clone()));
        }
        if let Some(fd) = &self.cache_fd {
            if self.cache_path == rel {
                return Ok(Some(fd.clone()));
            }
        }
        let fd = if self.use_openat2 {
            match open_plain(self.root.as_fd(), rel) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) | Err(Errno::ELOOP) | Err(Errno::ENOTDIR)
                | Err(Errno::EXDEV) => return Ok(None),
                Err(e) => return Err(e),
            }
        } else {
            let mut cur = nix::unistd::dup(self.root.as_fd())?;
            for comp in components(rel) {
                cur = match open_step(cur.as_fd(), comp) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) | Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                        return Ok(None)
                    }
                    Err(e) => return Err(e),
                };
            }
            cur
        };
        let fd = Rc::new(fd);
        self.cache_path.clear();
        self.cache_path.extend_from_slice(rel);
        self.cache_fd = Some(fd.clone());
        Ok(Some(fd))
    }

    /// Opens the directory `rel` itself for reading, not following it if its last
    /// component is a symlink (`ELOOP`/`ENOTDIR` then). `Ok(None)` when missing.
    pub(crate) fn open_dir_nofollow(&mut self, rel: &[u8]) -> Result<Option<OwnedFd>, Errno> {
        if rel.is_empty() {
            return nix::unistd::dup(self.root.as_fd()).map(Some);
        }
        let (parent, name) = split(rel);
        let Some(pfd) = self.dir(parent, false)? else {
            return Ok(None);
        };
        match openat(
            pfd.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn lookup(&self, rel: &[u8], create: bool) -> Result<Option<OwnedFd>, Errno> {
        if self.use_openat2 {
            match open_in_root(self.root.as_fd(), rel, OFlag::O_PATH) {
                Ok(fd) => return Ok(Some(fd)),
                Err(Errno::ENOENT) if !create => return Ok(None),
                // Missing directories (or a dangling symlink): walk, creating them.
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        self.walk(rel, create)
    }

    /// Walks `rel` one component at a time from the root, creating each missing
    /// directory when `create` (else answering `Ok(None)`), and following symlinks
    /// itself with in-root semantics: an absolute target restarts at the root, `..`
    /// never climbs above it. A dangling symlink thus gets its target directory created
    /// inside the root, like Docker's `FollowSymlinkInScope` + `MkdirAll`. Every step is
    /// a single-component `O_NOFOLLOW` open relative to a directory already inside the
    /// root.
    fn walk(&self, rel: &[u8], create: bool) -> Result<Option<OwnedFd>, Errno> {
        let mut todo: VecDeque<Vec<u8>> = components(rel).map(<[u8]>::to_vec).collect();
        // The resolved (symlink-free) path of `cur`, as components.
        let mut stack: Vec<Vec<u8>> = Vec::new();
        let mut cur = nix::unistd::dup(self.root.as_fd())?;
        let mut links = 0;
        while let Some(comp) = todo.pop_front() {
            match comp.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    stack.pop();
                    cur = self.reopen(&stack)?;
                    continue;
                }
                _ => {}
            }
            let st = match fstatat(cur.as_fd(), comp.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => Some(st),
                Err(Errno::ENOENT) => None,
                Err(e) => return Err(e),
            };
            let fmt = st.map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT);
            match fmt {
                None if !create => return Ok(None),
                None => {
                    let mode = Mode::from_bits_truncate(IMPLICIT_DIR_MODE);
                    match mkdirat(cur.as_fd(), comp.as_slice(), mode) {
                        // Exactly 0755 whatever the umask: layer content must not
                        // depend on the importing process. (Following is fine: it is
                        // the directory just made.)
                        Ok(()) => fchmodat(
                            cur.as_fd(),
                            comp.as_slice(),
                            mode,
                            FchmodatFlags::FollowSymlink,
                        )?,
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                }
                Some(SFlag::S_IFDIR) => {}
                Some(SFlag::S_IFLNK) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::ELOOP);
                    }
                    let target = readlinkat(cur.as_fd(), comp.as_slice())?;
                    let target = target.as_bytes();
                    if target.first() == Some(&b'/') {
                        stack.clear();
                        cur = nix::unistd::dup(self.root.as_fd())?;
                    }
                    for c in components(target).rev() {
                        todo.push_front(c.to_vec());
                    }
                    continue;
                }
                Some(_) => return Err(Errno::ENOTDIR),
            }
            cur = open_step(cur.as_fd(), &comp)?;
            stack.push(comp);
        }
        Ok(Some(cur))
    }

    /// Opens the symlink-free path `stack` (components) from the root, one
    /// `O_NOFOLLOW` step at a time.
    fn reopen(&self, stack: &[Vec<u8>]) -> Result<OwnedFd, Errno> {
        let mut cur = nix::unistd::dup(self.root.as_fd())?;
        for comp in stack {
            cur = open_step(cur.as_fd(), comp)?;
        }
        Ok(cur)
    }
}

/// One no-follow step down into directory `name`.
fn open_step(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Non-empty `/`-separated components of `p`.
fn components(p: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    p.split(|b| *b == b'/').filter(|c| !c.is_empty())
}

/// `openat2(root, rel, O_DIRECTORY | O_CLOEXEC | extra, RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS)`, retried on EAGAIN.
pub(crate) fn open_in_root(root: impl AsFd, rel: &[u8], extra: OFlag) -> Result<OwnedFd, Errno> {
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | extra)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    let root = root.as_fd();
    let mut tries = 0;
    loop {
        match openat2(root, rel, how()) {
            Err(Errno::EAGAIN) if tries < OPENAT2_RETRIES => tries += 1,
            r => return r,
        }
    }
}

/// `openat2(root, rel, O_PATH | O_DIRECTORY, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_XDEV)`, retried on EAGAIN: `rel` made of real directories only.
fn open_plain(root: BorrowedFd<'_>, rel: &[u8]) -> Result<OwnedFd, Errno> {
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_PATH)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            )
    };
    let mut tries = 0;
    loop {
        match openat2(root, rel, how()) {
            Err(Errno::EAGAIN) if tries < OPENAT2_RETRIES => tries += 1,
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_table() {
        let ok: &[(&[u8], &[u8])] = &[
            (b"a", b"a"),
            (b"./a", b"a"),
            (b"a/", b"a"),
            (b"./a//b/./c/", b"a/b/c"),
            (b".", b""),
            (b"./", b""),
            (b"a/.wh..wh..opq", b"a/.wh..wh..opq"),
            (b"...", b"..."),
            (b"/etc/passwd", b"etc/passwd"),
            (b"//abs//x/", b"abs/x"),
            (b"/", b""),
            (b"..a/b..", b"..a/b.."),
        ];
        let mut out = Vec::new();
        for (raw, want) in ok {
            clean(raw, &mut out).unwrap();
            assert_eq!(out, *want, "{}", String::from_utf8_lossy(raw));
        }
        let bad: &[(&[u8], BadName)] = &[
            (b"", BadName::Empty),
            (b"..", BadName::DotDot),
            (b"../x", BadName::DotDot),
            (b"a/../../x", BadName::DotDot),
            (b"a/..", BadName::DotDot),
            (b"./..", BadName::DotDot),
            (b"a\0b", BadName::Nul),
        ];
        for (raw, want) in bad {
            assert_eq!(
                clean(raw, &mut out),
                Err(*want),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(
            clean(&vec![b'a'; PATH_MAX + 1], &mut out),
            Err(BadName::TooLong)
        );
        let name = |n: usize| [b"d/".as_slice(), &vec![b'n'; n], b"/x"].concat();
        assert_eq!(clean(&name(255), &mut out), Ok(()));
        assert_eq!(clean(&name(256), &mut out), Err(BadName::ComponentTooLong));
    }

    #[test]
    fn split_and_depth() {
        assert_eq!(split(b"a"), (&b""[..], &b"a"[..]));
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(depth(b""), 0);
        assert_eq!(depth(b"a"), 1);
        assert_eq!(depth(b"a/b/c"), 3);
    }
}
