//! fd-relative removal that never follows symlinks.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{dup, unlinkat, UnlinkatFlags};

/// What was at a name before removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removed {
    Nothing,
    NonDir,
    Dir,
}

/// Whether `name` in `dir` is a directory (not following a final symlink); `None` if
/// absent.
pub(crate) fn is_dir_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<bool>, Errno> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR,
        )),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `name` in `dir` whatever it is; a directory is removed with all its content,
/// fd-relative, never following symlinks.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Removed, Errno> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(Removed::NonDir),
        Err(Errno::ENOENT) => return Ok(Removed::Nothing),
        // Linux answers EISDIR for a directory.
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    match is_dir_at(dir, name)? {
        None => Ok(Removed::Nothing),
        Some(false) => {
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
            Ok(Removed::NonDir)
        }
        Some(true) => {
            remove_tree(dir, name)?;
            Ok(Removed::Dir)
        }
    }
}

/// Removes the directory `name` in `dir` and everything below it, depth first, with
/// [`walk_dirs`] (one directory fd at a time whatever the depth: a hostile tar can nest
/// 2,000 directories in one entry name).
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let top = open_dir_nofollow(dir, name)?;
    walk_dirs(
        top,
        b"",
        &mut |d, _| empty_non_dirs(d),
        // Not a directory after all (d_type was unknown or it changed).
        &mut |parent, n| unlinkat(parent, n, UnlinkatFlags::NoRemoveDir),
        &mut |parent, n| unlinkat(parent, n, UnlinkatFlags::RemoveDir),
    )?;
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// Opens directory `name` in `dir` for reading, refusing a symlink.
fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// [`walk_dirs`]'s per-directory step: (open directory, its path) -> subdirectories.
pub(crate) type VisitDir<'a> = dyn FnMut(BorrowedFd<'_>, &[u8]) -> Result<Vec<Vec<u8>>, Errno> + 'a;
/// [`walk_dirs`]'s callbacks on one name in an open parent directory.
pub(crate) type AtName<'a> = dyn FnMut(BorrowedFd<'_>, &[u8]) -> Result<(), Errno> + 'a;

/// One directory on [`walk_dirs`]'s stack.
struct Frame {
    /// Its name in its parent.
    name: Vec<u8>,
    /// Length of the walk's path before this directory's name was appended.
    path_len: usize,
    /// Subdirectories still to visit.
    subdirs: Vec<Vec<u8>>,
    /// (dev, ino) of its parent, checked when climbing back with `..`.
    parent: (u64, u64),
}

/// Walks the tree below the open directory `start` depth first, holding one directory fd
/// at a time whatever the depth: it descends with `openat(O_NOFOLLOW)` and climbs back
/// with `..`, checking the parent's inode (`ESTALE` if the tree moved under it rather
/// than act elsewhere), and keeps only names on its stack.
///
/// - `visit(dir, path)` handles one directory (`path` is `start_path` joined with the
///   names walked, `/`-separated) and returns the subdirectories to descend into;
/// - `not_dir(parent, name)` is called for a returned name that turns out not to be a
///   directory (d_type was unknown, or it changed); a vanished one is skipped;
/// - `leave(parent, name)` is called once a subdirectory's subtree is done (not for
///   `start`).
pub(crate) fn walk_dirs(
    start: OwnedFd,
    start_path: &[u8],
    visit: &mut VisitDir<'_>,
    not_dir: &mut AtName<'_>,
    leave: &mut AtName<'_>,
) -> Result<(), Errno> {
    let mut path = start_path.to_vec();
    let mut cur = start;
    let mut stack = vec![Frame {
        name: Vec::new(),
        path_len: path.len(),
        subdirs: visit(cur.as_fd(), &path)?,
        // Never checked: the walk ends when the start frame is done.
        parent: (0, 0),
    }];
    while let Some(frame) = stack.last_mut() {
        if let Some(sub) = frame.subdirs.pop() {
            let here = fstat(cur.as_fd())?;
            let child = match open_dir_nofollow(cur.as_fd(), &sub) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => continue,
                Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
                    not_dir(cur.as_fd(), &sub)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let path_len = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&sub);
            let subdirs = visit(child.as_fd(), &path)?;
            stack.push(Frame {
                name: sub,
                path_len,
                subdirs,
                parent: (here.st_dev, here.st_ino),
            });
            cur = child;
            continue;
        }
        let done = stack.pop().expect("non-empty stack");
        if stack.is_empty() {
            break;
        }
        let up = openat(
            cur.as_fd(),
            "..",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = fstat(up.as_fd())?;
        if (st.st_dev, st.st_ino) != done.parent {
            return Err(Errno::ESTALE);
        }
        leave(up.as_fd(), &done.name)?;
        path.truncate(done.path_len);
        cur = up;
    }
    Ok(())
}

/// Unlinks every non-directory in the open directory `dir`; returns the names of its
/// subdirectories.
fn empty_non_dirs(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    // The dup shares the file offset of `dir`, which was just opened and never read.
    let mut d = Dir::from_fd(dup(dir)?)?;
    let mut subdirs = Vec::new();
    let mut files = Vec::new();
    for ent in d.iter() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        match ent.file_type() {
            Some(Type::Directory) => subdirs.push(n.to_vec()),
            Some(_) => files.push(n.to_vec()),
            None => match is_dir_at(dir, n)? {
                Some(true) => subdirs.push(n.to_vec()),
                Some(false) => files.push(n.to_vec()),
                None => {}
            },
        }
    }
    for f in files {
        match unlinkat(dir, f.as_slice(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(subdirs)
}
