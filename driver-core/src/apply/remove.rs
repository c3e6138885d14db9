//! fd-relative removal that never follows symlinks.

use std::os::fd::{AsFd, BorrowedFd};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

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
            remove_children(dir, name, &mut |_| false)?;
            unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
            Ok(Removed::Dir)
        }
    }
}

/// Removes every child of directory `name` in `dir` for which `keep(child)` is false.
/// `keep` sees the child's name; a kept child is left whole.
pub(crate) fn remove_children(
    dir: BorrowedFd<'_>,
    name: &[u8],
    keep: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<(), Errno> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = Dir::from_fd(fd)?;
    let mut children: Vec<(Vec<u8>, Option<Type>)> = Vec::new();
    for ent in d.iter() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        if keep(n) {
            continue;
        }
        children.push((n.to_vec(), ent.file_type()));
    }
    let dfd = d.as_fd();
    for (child, ty) in children {
        match ty {
            Some(Type::Directory) => {
                remove_children(dfd, &child, &mut |_| false)?;
                unlinkat(dfd, child.as_slice(), UnlinkatFlags::RemoveDir)?;
            }
            Some(_) => unlinkat(dfd, child.as_slice(), UnlinkatFlags::NoRemoveDir)?,
            None => {
                remove_at(dfd, &child)?;
            }
        }
    }
    Ok(())
}
