//! fd-relative removal that never follows symlinks.

use std::os::fd::{AsFd, BorrowedFd};

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

/// One directory being emptied by [`remove_tree`].
struct Frame {
    /// Its name in its parent.
    name: Vec<u8>,
    /// Subdirectories still to empty and remove.
    subdirs: Vec<Vec<u8>>,
    /// (dev, ino) of its parent, checked when climbing back with `..`.
    parent: (u64, u64),
}

/// Removes the directory `name` in `dir` and everything below it, depth first.
///
/// Holds one directory fd at a time whatever the depth (a hostile tar can nest 2,000
/// directories in one entry name): it descends with `openat(O_NOFOLLOW)` and climbs
/// back with `..`, checking the parent's inode, and keeps only names on its stack.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let open_dir = |at: BorrowedFd<'_>, n: &[u8]| {
        openat(
            at,
            n,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let top = fstat(dir)?;
    let mut cur = open_dir(dir, name)?;
    let mut stack = vec![Frame {
        name: name.to_vec(),
        subdirs: empty_non_dirs(cur.as_fd())?,
        parent: (top.st_dev, top.st_ino),
    }];
    loop {
        let Some(frame) = stack.last_mut() else {
            return Ok(());
        };
        if let Some(sub) = frame.subdirs.pop() {
            let here = fstat(cur.as_fd())?;
            let child = match open_dir(cur.as_fd(), &sub) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => continue,
                // Not a directory after all (d_type was unknown or it changed).
                Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
                    unlinkat(cur.as_fd(), sub.as_slice(), UnlinkatFlags::NoRemoveDir)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let subdirs = empty_non_dirs(child.as_fd())?;
            stack.push(Frame {
                name: sub,
                subdirs,
                parent: (here.st_dev, here.st_ino),
            });
            cur = child;
            continue;
        }
        let done = stack.pop().expect("non-empty stack");
        if stack.is_empty() {
            drop(cur);
            return unlinkat(dir, done.name.as_slice(), UnlinkatFlags::RemoveDir);
        }
        let up = openat(
            cur.as_fd(),
            "..",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = fstat(up.as_fd())?;
        if (st.st_dev, st.st_ino) != done.parent {
            // The tree moved under us; refuse rather than delete elsewhere.
            return Err(Errno::ESTALE);
        }
        unlinkat(up.as_fd(), done.name.as_slice(), UnlinkatFlags::RemoveDir)?;
        cur = up;
    }
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
