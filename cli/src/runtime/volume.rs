//! Volumes (`-v HOST:CTR[:ro]`): parsing, the host directory, the mount point in the
//! container root, and its removal after the run.
//!
//! The mount point is made with fd-relative calls from the container root
//! (`openat(O_NOFOLLOW)` / `mkdirat`): the root comes from an untrusted image, so a
//! symlink on the way (`/data -> /etc`) must not redirect a `mkdir` onto the host; such
//! a path is refused. Directories made for a mount point are empty once the bind mount
//! is gone and are removed after the run, so the mount point never enters `diff`,
//! `commit` or the rw layer (nor does the volume's content: the bind mount covers it).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::RunError;

/// One `-v HOST:CTR[:ro|:rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Absolute host directory (made when missing).
    pub host: PathBuf,
    /// Absolute path in the container, normalised (no `.`, `..` or repeated `/`), not `/`.
    pub container: PathBuf,
    /// `:ro`: a read-only bind mount.
    pub read_only: bool,
}

/// Parses `HOST:CTR[:ro|:rw]`. Errors: [`RunError::Usage`] naming the spec and the rule.
pub fn parse(spec: &str) -> Result<Volume, RunError> {
    let bad = |why: &str| RunError::Usage(format!("volume {spec:?}: {why}"));
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, ctr, read_only) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        [_, _, m] => return Err(bad(&format!("unknown mode {m:?} (ro or rw)"))),
        _ => return Err(bad("expected HOST:CONTAINER[:ro|:rw]")),
    };
    let host = PathBuf::from(host);
    if !host.is_absolute() {
        return Err(bad("the host path must be absolute"));
    }
    let mut container = PathBuf::from("/");
    if !ctr.starts_with('/') {
        return Err(bad("the container path must be absolute"));
    }
    for c in Path::new(ctr).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => container.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(bad("the container path must not contain '..'"))
            }
        }
    }
    if container == Path::new("/") {
        return Err(bad("the container path must not be /"));
    }
    Ok(Volume {
        host,
        container,
        read_only,
    })
}

/// Directories made in the container root for mount points, in creation order
/// (parents first), relative to the root.
#[derive(Debug, Default)]
pub struct MadeDirs(pub Vec<PathBuf>);

/// Makes `vol.host` when missing (0755). Runs once the run's other checks passed, so a
/// refused run makes nothing on the host. Errors: [`RunError::Volume`] naming the path.
pub fn prepare_host(vol: &Volume) -> Result<(), RunError> {
    let verr = |what: String| RunError::Volume {
        path: vol.host.clone(),
        reason: what,
    };
    std::fs::create_dir_all(&vol.host).map_err(|e| verr(format!("create host directory: {e}")))?;
    if !vol.host.is_dir() {
        return Err(verr("the host path is not a directory".into()));
    }
    Ok(())
}

/// Makes the mount point `vol.container` inside `root` when missing, recording what it
/// made in `made`. Errors: [`RunError::Volume`] naming the path; a symlink on the way
/// is refused.
pub fn prepare(root: &Path, vol: &Volume, made: &mut MadeDirs) -> Result<(), RunError> {
    make_dirs_beneath(root, &vol.container, &mut made.0).map_err(|e| RunError::Volume {
        path: vol.container.clone(),
        reason: e.to_string(),
    })
}

/// Makes the working directory `cwd` (absolute, in the container) inside `root` when
/// missing, as runc does before it changes into it (libcontainer does not, and fails):
/// mode 0755, owner root, left in the rw layer as Docker leaves it. Skipped when `cwd`
/// lies in a volume (the runtime sees the volume's tree there) or a component is a
/// symlink (the runtime resolves it inside the root). Errors: [`RunError::Usage`]
/// naming the directory.
pub fn prepare_workdir(root: &Path, cwd: &Path, volumes: &[Volume]) -> Result<(), RunError> {
    if volumes.iter().any(|v| cwd.starts_with(&v.container)) {
        return Ok(());
    }
    let mut made = Vec::new();
    match make_dirs_beneath(root, cwd, &mut made) {
        Ok(()) => Ok(()),
        Err(BeneathError::NotADirectory(_)) => Ok(()),
        Err(e) => Err(RunError::Usage(format!(
            "working directory {}: {e}",
            cwd.display()
        ))),
    }
}

/// Why [`make_dirs_beneath`] stopped.
#[derive(Debug, thiserror::Error)]
enum BeneathError {
    #[error("/{} in the container is not a directory (symlinks are not followed)", .0.display())]
    NotADirectory(PathBuf),
    #[error("{what} /{}: {errno}", rel.display())]
    Io {
        what: &'static str,
        rel: PathBuf,
        errno: Errno,
    },
}

/// Walks `path` (absolute, normalised) from `root` with `openat(O_NOFOLLOW)`, making
/// each missing directory (0755) with `mkdirat` and recording it, relative to `root`,
/// in `made` (parents first). A symlink or non-directory on the way stops the walk.
fn make_dirs_beneath(
    root: &Path,
    path: &Path,
    made: &mut Vec<PathBuf>,
) -> Result<(), BeneathError> {
    let open_dir = |dir: &dyn AsFd, name: &OsStr| -> nix::Result<OwnedFd> {
        openat(
            dir,
            name,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let io = |what, rel: &Path, errno| BeneathError::Io {
        what,
        rel: rel.to_owned(),
        errno,
    };
    let mut cur: OwnedFd = nix::fcntl::open(
        root,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("open the container root", Path::new(""), e))?;
    let mut rel = PathBuf::new();
    for c in path.components() {
        let Component::Normal(name) = c else { continue };
        rel.push(name);
        let next = match open_dir(&cur, name) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match mkdirat(&cur, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) => made.push(rel.clone()),
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io("make", &rel, e)),
                }
                open_dir(&cur, name).map_err(|e| io("open", &rel, e))?
            }
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                return Err(BeneathError::NotADirectory(rel))
            }
            Err(e) => return Err(io("open", &rel, e)),
        };
        cur = next;
    }
    Ok(())
}

/// Removes the directories of `made` (children first) from `root` when empty; a
/// directory the process filled stays (logged). Errors are logged, not returned: this
/// runs on the way out, after the process's status is known.
pub fn remove_made(root: &Path, made: &MadeDirs) {
    let dir = match nix::fcntl::open(
        root,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(root = %root.display(), error = %e, "open container root to remove mount points");
            return;
        }
    };
    for rel in made.0.iter().rev() {
        // `rel` has only normal components we made ourselves, parents first, and each
        // was opened with O_NOFOLLOW when made; unlinkat(AT_REMOVEDIR) does not follow a
        // final symlink either.
        match unlinkat(&dir, rel.as_path(), UnlinkatFlags::RemoveDir) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(path = %rel.display(), error = %e, "mount point left in the container")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let v = parse("/h:/c").unwrap();
        assert_eq!(
            (v.host.as_path(), v.container.as_path(), v.read_only),
            (Path::new("/h"), Path::new("/c"), false)
        );
        let v = parse("/h:/a//b/./c/:ro").unwrap();
        assert_eq!(
            (v.container.as_path(), v.read_only),
            (Path::new("/a/b/c"), true)
        );
        assert!(!parse("/h:/c:rw").unwrap().read_only);
        for bad in [
            "h:/c",
            "/h:c",
            "/h:/",
            "/h:/a/../b",
            "/h",
            "/h:/c:rx",
            "/h:/c:ro:x",
            "",
        ] {
            assert!(matches!(parse(bad), Err(RunError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn mount_point_made_and_removed_symlink_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/tmp", root.join("link")).unwrap();
        let mut made = MadeDirs::default();
        let vol = |c: &str| Volume {
            host: d.path().join("h"),
            container: PathBuf::from(c),
            read_only: false,
        };
        prepare(&root, &vol("/etc/a/b"), &mut made).unwrap();
        assert!(root.join("etc/a/b").is_dir());
        assert!(
            !d.path().join("h").exists(),
            "the host side waits for prepare_host"
        );
        prepare_host(&vol("/etc/a/b")).unwrap();
        assert!(d.path().join("h").is_dir());
        assert_eq!(
            made.0,
            vec![PathBuf::from("etc/a"), PathBuf::from("etc/a/b")]
        );
        let e = prepare(&root, &vol("/link/x"), &mut made).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(!Path::new("/tmp/x").exists() || made.0.len() == 2);
        remove_made(&root, &made);
        assert!(!root.join("etc/a").exists());
        assert!(root.join("etc").is_dir());
    }
}
