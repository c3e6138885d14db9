//! The userspace aufs server process: `layerctl-aufs-server serve --mountpoint <mnt>
//! [--threads N] --branch <rw> --branch <ro>...` mounts [`crate::fs::AufsFs`] at
//! `<mnt>`, answers FUSE's INIT, writes `ready` on its stdout and serves until the
//! filesystem is unmounted; then it exits 0.
//!
//! Why a process of its own: the mount must outlive the `layerctl mount` command that
//! made it, and a multi-threaded caller (a test harness, a daemon) cannot safely fork
//! without exec. The driver runs it ([`crate::options::ServerCommand`]); a multi-call
//! binary such as `layerctl` may run [`main_with_args`] under a hidden subcommand
//! instead of shipping the small `layerctl-aufs-server` binary.
//!
//! Mount options: `allow_other` (every uid of a container uses it),
//! `default_permissions` (the kernel checks modes and owners), `suid` and `dev` (a
//! container root runs setuid programs and has device nodes), fsname
//! `layerctl-aufs`, type `fuse.aufs`.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use driver_core::{LayerStack, WhiteoutFormat};
use fuser::{Config, MountOption, Session, SessionACL};

use crate::fs::AufsFs;

/// What `serve` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeArgs {
    /// Mount point.
    pub mountpoint: PathBuf,
    /// Branches, top (writable) first.
    pub branches: Vec<PathBuf>,
    /// FUSE worker threads.
    pub threads: usize,
    /// Answer FUSE OPEN and use passthrough for large regular files where the kernel
    /// offers it (else: `no_open`, see [`crate::fs`]).
    pub passthrough: bool,
}

impl ServeArgs {
    /// The command-line arguments that [`parse_args`] reads back (after `serve`).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "serve".into(),
            "--mountpoint".into(),
            self.mountpoint.clone().into(),
            "--threads".into(),
            self.threads.to_string().into(),
        ];
        if self.passthrough {
            a.push("--passthrough".into());
        }
        for b in &self.branches {
            a.push("--branch".into());
            a.push(b.clone().into());
        }
        a
    }
}

/// Parses `serve --mountpoint <mnt> [--threads N] --branch <dir>...`.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<ServeArgs, String> {
    let mut it = args.into_iter();
    if it.next().as_deref() != Some("serve".as_ref()) {
        return Err(
            "usage: serve --mountpoint <dir> [--threads N] [--passthrough] --branch <dir>..."
                .into(),
        );
    }
    let mut mountpoint = None;
    let mut branches = Vec::new();
    let mut threads = crate::options::DEFAULT_THREADS;
    let mut passthrough = false;
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .ok_or_else(|| format!("{} needs a value", a.to_string_lossy()))
        };
        match a.to_str() {
            Some("--mountpoint") => mountpoint = Some(PathBuf::from(val()?)),
            Some("--branch") => branches.push(PathBuf::from(val()?)),
            Some("--passthrough") => passthrough = true,
            Some("--no-passthrough") => passthrough = false,
            Some("--threads") => {
                threads = val()?
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .filter(|n| (1..=crate::options::MAX_THREADS).contains(n))
                    .ok_or("--threads takes 1..=8")?
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    let mountpoint = mountpoint.ok_or("--mountpoint is required")?;
    if branches.is_empty() {
        return Err("at least one --branch is required".into());
    }
    Ok(ServeArgs {
        mountpoint,
        branches,
        threads,
        passthrough,
    })
}

/// Mounts and serves until unmounted. `ready` runs once the mount answers.
pub fn serve(args: &ServeArgs, ready: impl FnOnce()) -> std::io::Result<()> {
    // Modes of new entries come from the client's request, not from our umask.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    // One backing file per node in use (`no_open`): take the hard limit of open files.
    raise_nofile();
    let fs = AufsFs::new(
        LayerStack::new(args.branches.clone(), WhiteoutFormat::Aufs),
        args.passthrough,
    )
    .map_err(std::io::Error::other)?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("layerctl-aufs".into()),
        MountOption::Subtype("aufs".into()),
        MountOption::DefaultPermissions,
        MountOption::Suid,
        MountOption::Dev,
        MountOption::RW,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(args.threads);
    config.clone_fd = args.threads > 1;
    let session = Session::new(fs, &args.mountpoint, &config)?;
    ready();
    session.run()
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (logged when it cannot).
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::info!(soft, hard, error = %e, "cannot raise the open files limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::info!(error = %e, "cannot read the open files limit"),
    }
}

/// Entry point of the server binary: parses `args` (without the program name), serves,
/// and returns the exit code. Errors go to stderr (the driver keeps it in
/// `run/<id>.log` and quotes it when a mount fails).
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("layerctl-aufs-server: {e}");
            return 2;
        }
    };
    let r = serve(&a, || {
        let mut out = std::io::stdout();
        if let Err(e) = out.write_all(b"ready\n").and_then(|()| out.flush()) {
            eprintln!("layerctl-aufs-server: telling the driver we are ready: {e}");
        }
    });
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "layerctl-aufs-server: serving {}: {e}",
                a.mountpoint.display()
            );
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let a = ServeArgs {
            mountpoint: "/r/aufs/mnt/x y".into(),
            branches: vec!["/r/aufs/diff/x y".into(), "/r/aufs/diff/b:c".into()],
            threads: 3,
            passthrough: false,
        };
        assert_eq!(parse_args(a.to_args()).unwrap(), a);
        assert!(parse_args(["serve".into()]).is_err());
        assert!(parse_args(["nope".into()]).is_err());
        let no_branch: Vec<OsString> = vec!["serve".into(), "--mountpoint".into(), "/m".into()];
        assert!(parse_args(no_branch).is_err());
    }
}
