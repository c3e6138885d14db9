//! `[driver_options.aufs]` in config.toml.
//!
//! - `mode`: `auto` (default: kernel aufs when `/proc/filesystems` lists it, else the
//!   userspace server), `kernel`, `userspace`.
//! - `server`: the userspace server program (default: `$LAYERCTL_AUFS_SERVER`, else
//!   `layerctl-aufs-server` beside the running executable). The driver runs it as
//!   `<server> [server_args...] serve --mountpoint <mnt> --branch <rw> --branch <ro>...`.
//! - `threads`: FUSE worker threads of each server, 1..=8 (default 2; the machine this
//!   was measured on has 2 cores).
//! - `passthrough`: `true` (default) or `false`. `true`: the server answers FUSE OPEN;
//!   files of 1 MiB or more are opened with FUSE passthrough where the kernel offers it
//!   (Linux >= 6.9), so their data and mmap go straight to the branch file (large files
//!   at kernel speed, their page cache shared with every other mount of the layer);
//!   smaller files opened for reading get no backing file at open (one `lstat`), and
//!   warm reads come from the kernel's page cache (`keep_cache`). The price is two
//!   round trips per open (OPEN, and RELEASE at the last close): a warm `tar -c` of a
//!   Debian tree is 1.5-1.8x kernel overlay (2.7x on an idle machine, where each round
//!   trip wakes an idle CPU). `false`: the server declines OPEN (`no_open`), so the
//!   kernel opens and closes files without a round trip and reads and writes name the
//!   node: warm small-file reads at kernel-overlay speed, but every file, large ones
//!   included, is read through FUSE's own page cache, which on Linux 6.18 holds 4 KiB
//!   folios only (ext4's holds large folios): a warm read of a 512 MiB file is
//!   1.2-2.7x kernel overlay, a cold one 1.35-1.9x, and each mount keeps its own copy
//!   of the pages. fuse-overlayfs reads the same file no faster: side by side, which
//!   of the two is faster warm follows which one filled its page cache first (the
//!   physical pages it got), not anything the server negotiates (BENCHMARKS.md, aufs,
//!   fourth session). Every mount reads ahead 4 MiB ([`crate::READ_AHEAD_KB`]). Neither mode meets every speed target of issue 7 on this kernel;
//!   `true` misses the fewest (one: warm small-file reads; BENCHMARKS.md, "aufs", has
//!   both measured and what each lever did). Without kernel passthrough, `true` falls
//!   back to `false`.
//!   Directories never cost an OPENDIR round trip (`no_opendir`, both modes).
//!
//! Unknown keys are an `InvalidOption` error.

use std::ffi::OsString;
use std::path::PathBuf;

use driver_core::{DriverError, DriverOptions, Result};

/// Which backend mounts the stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModeChoice {
    /// Kernel aufs when present, else userspace.
    #[default]
    Auto,
    /// Kernel aufs or nothing.
    Kernel,
    /// The userspace server even when the kernel has aufs.
    Userspace,
}

/// Environment variable naming the server program (for tests and packaging).
pub const SERVER_ENV: &str = "LAYERCTL_AUFS_SERVER";
/// The server binary's file name, looked for beside the running executable.
pub const SERVER_BIN: &str = "layerctl-aufs-server";
/// Default FUSE worker threads per server.
pub const DEFAULT_THREADS: usize = 2;
/// Most FUSE worker threads per server.
pub const MAX_THREADS: usize = 8;

/// The program (and leading arguments) that runs a userspace server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCommand {
    /// Executable.
    pub program: PathBuf,
    /// Arguments before `serve ...` (e.g. a hidden subcommand of a multi-call binary).
    pub args: Vec<OsString>,
}

impl ServerCommand {
    /// `$LAYERCTL_AUFS_SERVER`, else `layerctl-aufs-server` beside the current executable.
    pub fn default_location() -> Option<ServerCommand> {
        if let Some(p) = std::env::var_os(SERVER_ENV) {
            return Some(ServerCommand {
                program: p.into(),
                args: Vec::new(),
            });
        }
        let exe = std::env::current_exe().ok()?;
        let dir = exe.parent()?;
        // Test binaries live in target/<profile>/deps, the server one level up.
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            let p = d.join(SERVER_BIN);
            if p.is_file() {
                return Some(ServerCommand {
                    program: p,
                    args: Vec::new(),
                });
            }
        }
        None
    }
}

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AufsOptions {
    /// Backend choice.
    pub mode: ModeChoice,
    /// Server program, if given in the options.
    pub server: Option<PathBuf>,
    /// Worker threads per server.
    pub threads: usize,
    /// FUSE passthrough for regular files.
    pub passthrough: bool,
}

impl Default for AufsOptions {
    fn default() -> Self {
        AufsOptions {
            mode: ModeChoice::Auto,
            server: None,
            threads: DEFAULT_THREADS,
            passthrough: true,
        }
    }
}

impl AufsOptions {
    /// Parses `[driver_options.aufs]`.
    ///
    /// Errors: [`DriverError::InvalidOption`] naming the key for an unknown key or a bad
    /// value.
    pub fn parse(opts: &DriverOptions) -> Result<Self> {
        let mut o = AufsOptions::default();
        for (k, v) in opts {
            let bad = |reason: String| DriverError::InvalidOption {
                key: format!("aufs.{k}"),
                reason,
            };
            match k.as_str() {
                "mode" => {
                    o.mode = match v.as_str() {
                        "auto" => ModeChoice::Auto,
                        "kernel" => ModeChoice::Kernel,
                        "userspace" => ModeChoice::Userspace,
                        _ => return Err(bad(format!("{v:?}: expected auto, kernel or userspace"))),
                    }
                }
                "server" => o.server = Some(PathBuf::from(v)),
                "threads" => {
                    o.threads = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_THREADS).contains(n))
                        .ok_or_else(|| bad(format!("{v:?}: expected 1..={MAX_THREADS}")))?
                }
                "passthrough" => {
                    o.passthrough = match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(format!("{v:?}: expected true or false"))),
                    }
                }
                _ => {
                    return Err(bad(
                        "unknown key (known: mode, server, threads, passthrough)".into(),
                    ))
                }
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> DriverOptions {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parse_table() {
        assert_eq!(
            AufsOptions::parse(&opts(&[])).unwrap(),
            AufsOptions::default()
        );
        let o = AufsOptions::parse(&opts(&[
            ("mode", "userspace"),
            ("threads", "4"),
            ("server", "/x"),
        ]))
        .unwrap();
        assert_eq!(o.mode, ModeChoice::Userspace);
        assert_eq!(o.threads, 4);
        assert_eq!(o.server.as_deref(), Some(std::path::Path::new("/x")));
        assert_eq!(
            AufsOptions::parse(&opts(&[("mode", "kernel")]))
                .unwrap()
                .mode,
            ModeChoice::Kernel
        );
        assert!(AufsOptions::parse(&opts(&[])).unwrap().passthrough);
        assert!(
            !AufsOptions::parse(&opts(&[("passthrough", "false")]))
                .unwrap()
                .passthrough
        );
        assert!(AufsOptions::parse(&opts(&[("passthrough", "yes")])).is_err());
        for bad in [
            ("mode", "fast"),
            ("threads", "0"),
            ("threads", "9"),
            ("threads", "x"),
            ("nope", "1"),
        ] {
            assert!(
                matches!(
                    AufsOptions::parse(&opts(&[bad])),
                    Err(DriverError::InvalidOption { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
