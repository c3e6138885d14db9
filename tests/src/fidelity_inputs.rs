//! Inputs of the cross-driver fidelity test (`tests/fidelity.rs`, issue 6): one small
//! image per kind of layer that real builders and registries produce and that a driver
//! can get wrong, plus a compact builder for the expected trees the test writes out.
//!
//! - [`implied_parents`], [`usrmerge`], [`usrmerge_absolute`], [`symlink_chain`],
//!   [`same_layer_whiteouts`], [`symlink_hard_links`], [`deleted_init_dirs`]: layers built
//!   from [`Entry`] lists, with entries deliberately missing (no parent directory entries,
//!   writes below a lower symlink, whiteouts in the layer of the entry they name).
//! - [`gnu_sparse_tar`]: a layer written by the system GNU tar with `-S` in one of the
//!   four GNU sparse formats ([`SparseFormat`]), from files with holes ([`sparse_files`]).
//! - [`base256_tar`]: hand-built ustar headers with GNU base-256 numbers (a negative mtime,
//!   a uid too big for octal).
//! - [`without_eof_blocks`]: a tar cut right after its last entry (no two zero blocks).
//! - [`zstd_with_skippable_frames`]: zstd blobs that start with skippable frames (pzstd /
//!   seekable shapes).
//!
//! Each input is checked against GNU tar or the zstd tool where that says what the bytes
//! mean, so a wrong input fails here with a message instead of making a wrong expectation.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::fixtures::{build_tar, noise, zstd_checked, Entry, ExpEntry, Expected, NodeKind};
use crate::hostile::{raw_header, RawEntry};

/// The default mtime of fixture entries, as the expected trees write it.
pub const MTIME: i64 = crate::fixtures::DEFAULT_MTIME as i64;

/// An expected tree written out entry by entry. Entries start as `0:0`, mtime [`MTIME`],
/// mode 0755 (dir), 0644 (file), 0777 (symlink); [`Tree::mode`], [`Tree::owner`] and
/// [`Tree::mtime`] change the entry added last.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    exp: Expected,
    last: Option<String>,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, path: &str, kind: NodeKind, mode: u32) -> Self {
        self.exp.entries.insert(
            path.to_string(),
            ExpEntry {
                kind,
                mode,
                uid: 0,
                gid: 0,
                mtime: MTIME,
                xattrs: BTreeMap::new(),
                link_group: None,
            },
        );
        self.last = Some(path.to_string());
        self
    }

    fn last_mut(&mut self) -> &mut ExpEntry {
        let last = self.last.as_ref().expect("Tree: no entry added yet");
        self.exp.entries.get_mut(last).expect("last entry exists")
    }

    pub fn dir(self, path: &str) -> Self {
        self.add(path, NodeKind::Dir, 0o755)
    }

    pub fn file(self, path: &str, content: &[u8]) -> Self {
        let kind = NodeKind::File {
            sha256: hex::encode(Sha256::digest(content)),
            size: content.len() as u64,
        };
        self.add(path, kind, 0o644)
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.add(path, NodeKind::Symlink(target.to_string()), 0o777)
    }

    pub fn char_dev(self, path: &str, major: u64, minor: u64) -> Self {
        self.add(path, NodeKind::CharDev(major, minor), 0o666)
    }

    pub fn fifo(self, path: &str) -> Self {
        self.add(path, NodeKind::Fifo, 0o600)
    }

    /// `path` is a hard link to the earlier entry `to` (one inode, one attribute set).
    pub fn hard_link(mut self, path: &str, to: &str) -> Self {
        let t = self
            .exp
            .entries
            .get_mut(to)
            .unwrap_or_else(|| panic!("Tree: hard link {path} to unknown {to}"));
        let group = t.link_group.get_or_insert_with(|| to.to_string()).clone();
        let mut copy = t.clone();
        copy.link_group = Some(group);
        self.exp.entries.insert(path.to_string(), copy);
        self.last = Some(path.to_string());
        self
    }

    pub fn mode(mut self, mode: u32) -> Self {
        self.last_mut().mode = mode;
        self
    }

    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        let e = self.last_mut();
        (e.uid, e.gid) = (uid, gid);
        self
    }

    pub fn mtime(mut self, mtime: i64) -> Self {
        self.last_mut().mtime = mtime;
        self
    }

    pub fn xattr(mut self, key: &str, value: &[u8]) -> Self {
        self.last_mut()
            .xattrs
            .insert(key.to_string(), value.to_vec());
        self
    }

    pub fn build(self) -> Expected {
        self.exp
    }
}

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    build_tar(entries).expect("building a fixture tar in memory")
}

/// Issue 6 item 1. Layer 0: `a/` 0700 1000:1000 (xattr `user.implied=kept`) and `a/b/` 0751 1000:1000, a sticky
/// `tmp/` 1777, `d/` and `e/` 0750 1000:1000 with children, `o/` 0755 with a child.
/// Layer 1 has no entry for any of those directories: `a/b/new.txt`, `tmp/x`, the opaque
/// markers `d/.wh..wh..opq` (nothing else in d) and `e/.wh..wh..opq` with `e/new`; and
/// `o/` 0700 1000:1000 with its opaque marker (an opaque dir WITH its dir entry).
pub fn implied_parents() -> Vec<Vec<u8>> {
    let l0 = vec![
        Entry::dir("a")
            .mode(0o700)
            .owner(1000, 1000)
            .xattr("user.implied", b"kept"),
        Entry::dir("a/b").mode(0o751).owner(1000, 1000),
        Entry::file("a/b/old.txt", b"old\n".to_vec()),
        Entry::dir("tmp").mode(0o1777),
        Entry::file("tmp/old", b"lower tmp file\n".to_vec()),
        Entry::dir("d").mode(0o750).owner(1000, 1000),
        Entry::file("d/old", b"hidden by the opaque marker\n".to_vec()),
        Entry::dir("d/sub"),
        Entry::file("d/sub/deep", b"hidden too\n".to_vec()),
        Entry::dir("e").mode(0o750).owner(1000, 1000),
        Entry::file("e/old", b"hidden by the opaque marker\n".to_vec()),
        Entry::dir("o"),
        Entry::file("o/old", b"hidden by the opaque marker\n".to_vec()),
    ];
    let l1 = vec![
        Entry::file("a/b/new.txt", b"new in layer 1\n".to_vec()),
        Entry::file("tmp/x", b"x\n".to_vec()),
        Entry::opaque("d"),
        Entry::opaque("e"),
        Entry::file("e/new", b"new in the opaque e\n".to_vec()),
        Entry::dir("o").mode(0o700).owner(1000, 1000),
        Entry::opaque("o"),
        Entry::file("o/new", b"new in the opaque o\n".to_vec()),
    ];
    vec![tar_of(&l0), tar_of(&l1)]
}

/// Issue 6 item 2 (Debian/Ubuntu usrmerge). Layer 0: `usr/bin/sh`, `usr/lib/libc`,
/// `bin -> usr/bin`, `lib -> usr/lib`; layer 1 only `bin/newtool` and `lib/.wh.libc`.
pub fn usrmerge() -> Vec<Vec<u8>> {
    let l0 = vec![
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::file("usr/bin/sh", b"#!sh\n".to_vec()).mode(0o755),
        Entry::dir("usr/lib"),
        Entry::file("usr/lib/libc", b"libc\n".to_vec()),
        Entry::symlink("bin", "usr/bin"),
        Entry::symlink("lib", "usr/lib"),
    ];
    let l1 = vec![
        Entry::file("bin/newtool", b"new tool\n".to_vec()).mode(0o755),
        Entry::whiteout("lib/libc"),
    ];
    vec![tar_of(&l0), tar_of(&l1)]
}

/// [`usrmerge`] with absolute symlinks (`bin -> /usr/bin`, `lib -> /usr/lib`): they
/// resolve inside the root filesystem, never on the host.
pub fn usrmerge_absolute() -> Vec<Vec<u8>> {
    let l0 = vec![
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::file("usr/bin/sh", b"#!sh\n".to_vec()).mode(0o755),
        Entry::dir("usr/lib"),
        Entry::file("usr/lib/libc", b"libc\n".to_vec()),
        Entry::symlink("bin", "/usr/bin"),
        Entry::symlink("lib", "/usr/lib"),
    ];
    let l1 = vec![
        Entry::file("bin/newtool", b"new tool\n".to_vec()).mode(0o755),
        Entry::whiteout("lib/libc"),
    ];
    vec![tar_of(&l0), tar_of(&l1)]
}

/// A chain of symlinked parents: layer 0 `usr/x/old`, `b -> usr/x`, `a -> b`; layer 1
/// `a/new` and `a/.wh.old` (both land in `usr/x`).
pub fn symlink_chain() -> Vec<Vec<u8>> {
    let l0 = vec![
        Entry::dir("usr"),
        Entry::dir("usr/x").mode(0o750).owner(1000, 1000),
        Entry::file("usr/x/old", b"old\n".to_vec()),
        Entry::symlink("b", "usr/x"),
        Entry::symlink("a", "b"),
    ];
    let l1 = vec![
        Entry::file("a/new", b"through two symlinks\n".to_vec()),
        Entry::whiteout("a/old"),
    ];
    vec![tar_of(&l0), tar_of(&l1)]
}

/// Issue 6 item 3: whiteouts in the layer of the entry they name apply to lower layers
/// only. Layer 0: `f` ("lower"), `d/old`, `g/old`. Layer 1, in this order: `f`
/// ("upper"), `.wh.f`; `d/` 0700, `d/new`, `.wh.d`; then `.wh.g`, `g/` 0711, `g/new`.
pub fn same_layer_whiteouts() -> Vec<Vec<u8>> {
    let l0 = vec![
        Entry::file("f", b"lower\n".to_vec()),
        Entry::dir("d"),
        Entry::file("d/old", b"lower d/old\n".to_vec()),
        Entry::dir("g"),
        Entry::file("g/old", b"lower g/old\n".to_vec()),
    ];
    let l1 = vec![
        Entry::file("f", b"upper\n".to_vec()),
        Entry::whiteout("f"),
        Entry::dir("d").mode(0o700),
        Entry::file("d/new", b"upper d/new\n".to_vec()),
        Entry::whiteout("d"),
        Entry::whiteout("g"),
        Entry::dir("g").mode(0o711),
        Entry::file("g/new", b"upper g/new\n".to_vec()),
    ];
    vec![tar_of(&l0), tar_of(&l1)]
}

/// Issue 6 item 8: hard links of every file type in one layer: `sl -> target.txt` with
/// `hl` linked to `sl`, and linked pairs of a regular file, a fifo and a char device.
pub fn symlink_hard_links() -> Vec<Vec<u8>> {
    let l0 = vec![
        Entry::file("target.txt", b"target\n".to_vec()),
        Entry::symlink("sl", "target.txt"),
        Entry::hardlink("hl", "sl"),
        Entry::file("f1", b"regular pair\n".to_vec()).mode(0o600),
        Entry::hardlink("f2", "f1"),
        Entry::fifo("p1"),
        Entry::hardlink("p2", "p1"),
        Entry::char_dev("c1", 1, 7),
        Entry::hardlink("c2", "c1"),
    ];
    vec![tar_of(&l0)]
}

/// Issue 6 item 9: layer 0 has `dev/` and `etc/` 0700 1000:1000 with a child each;
/// layer 1 deletes both (`.wh.dev`, `.wh.etc`) and recreates neither. For contrast,
/// `proc/` 0700 1000:1000 of layer 0 is not deleted (the init layer keeps it as it is).
pub fn deleted_init_dirs() -> Vec<Vec<u8>> {
    let l0 = vec![
        Entry::dir("proc").mode(0o700).owner(1000, 1000),
        Entry::dir("dev").mode(0o700).owner(1000, 1000),
        Entry::file("dev/keep", b"deleted with dev\n".to_vec()),
        Entry::dir("etc").mode(0o700).owner(1000, 1000),
        Entry::file("etc/keep", b"deleted with etc\n".to_vec()),
        Entry::file("other", b"stays\n".to_vec()),
    ];
    let l1 = vec![Entry::whiteout("dev"), Entry::whiteout("etc")];
    vec![tar_of(&l0), tar_of(&l1)]
}

/// The GNU sparse formats of issue 6 item 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparseFormat {
    /// PAX `GNU.sparse.offset`/`numbytes` record pairs (`--sparse-version=0.0`).
    Pax00,
    /// PAX `GNU.sparse.map` (`--sparse-version=0.1`).
    Pax01,
    /// PAX `GNU.sparse.major=1`, map in the data, name `GNUSparseFile.N/...` (1.0).
    Pax10,
    /// Old GNU type `S` header with the map in the header (`--format=gnu`).
    OldGnu,
}

/// Size of each sparse file: 1,049,000 bytes (1 MiB + 424, so the end is not aligned).
pub const SPARSE_SIZE: u64 = 1_049_000;

/// The files put into each sparse layer: (name, content). `data-end.bin` has data at
/// 0..4096, 303104..311296 and from 1044480 to the end; `hole-end.bin` has data only at
/// 40960..49152 and ends in a hole. Holes are 4 KiB aligned so filesystems keep them.
pub fn sparse_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut a = vec![0u8; SPARSE_SIZE as usize];
    a[..4096].copy_from_slice(&noise(4096, 11));
    a[303_104..311_296].copy_from_slice(&noise(8192, 12));
    a[1_044_480..].copy_from_slice(&noise(SPARSE_SIZE as usize - 1_044_480, 13));
    let mut b = vec![0u8; SPARSE_SIZE as usize];
    b[40_960..49_152].copy_from_slice(&noise(8192, 14));
    vec![("data-end.bin", a), ("hole-end.bin", b)]
}

/// Writes `content` into `path` as a file with holes: only the 4 KiB blocks that hold a
/// nonzero byte are written, then the length is set.
fn write_with_holes(path: &Path, content: &[u8]) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    for (i, block) in content.chunks(4096).enumerate() {
        if block.iter().any(|&b| b != 0) {
            f.write_all_at(block, (i * 4096) as u64)
                .with_context(|| format!("write {}", path.display()))?;
        }
    }
    f.set_len(content.len() as u64)
        .with_context(|| format!("truncate {}", path.display()))?;
    Ok(())
}

/// Runs GNU tar (`tar` on $PATH) with `args`; fails with a clear message when it is
/// missing or is not GNU tar.
fn gnu_tar(args: &[&str], dir: &Path) -> Result<Vec<u8>> {
    let version = Command::new("tar")
        .arg("--version")
        .output()
        .context("run `tar --version`: GNU tar is needed to build the sparse layers")?;
    ensure!(
        String::from_utf8_lossy(&version.stdout).contains("GNU tar"),
        "`tar` is not GNU tar (GNU tar builds the sparse layers): {}",
        String::from_utf8_lossy(&version.stdout)
    );
    let out = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .env("TZ", "UTC")
        .output()
        .with_context(|| format!("run tar {args:?}"))?;
    ensure!(
        out.status.success(),
        "tar {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// A layer tar holding [`sparse_files`] (0644 0:0, mtime [`MTIME`]) written by GNU tar
/// `-S` in `format`, built in a fresh dir below `scratch`. Checks that the tar really
/// uses that sparse format (so a filesystem without holes fails here, not later).
pub fn gnu_sparse_tar(scratch: &Path, format: SparseFormat) -> Result<Vec<u8>> {
    let dir = scratch.join(format!("sparse-{format:?}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(MTIME as u64);
    let mut names = Vec::new();
    for (name, content) in sparse_files() {
        let p = dir.join(name);
        write_with_holes(&p, &content)?;
        let f = std::fs::File::options().write(true).open(&p)?;
        f.set_modified(mtime)
            .with_context(|| format!("set mtime of {}", p.display()))?;
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        names.push(name);
    }
    let fmt_args: &[&str] = match format {
        SparseFormat::Pax00 => &["--format=posix", "--sparse-version=0.0"],
        SparseFormat::Pax01 => &["--format=posix", "--sparse-version=0.1"],
        SparseFormat::Pax10 => &["--format=posix", "--sparse-version=1.0"],
        SparseFormat::OldGnu => &["--format=gnu"],
    };
    let mut args: Vec<&str> = fmt_args.to_vec();
    args.extend([
        "-S",
        "--numeric-owner",
        "--owner=0",
        "--group=0",
        // No atime/ctime records: they change between runs.
        "--pax-option=delete=atime,delete=ctime",
        "-cf",
        "-",
    ]);
    if format == SparseFormat::OldGnu {
        args.retain(|a| !a.starts_with("--pax-option"));
    }
    args.extend(names);
    let tar = gnu_tar(&args, &dir)?;
    let has = |s: &[u8]| tar.windows(s.len()).any(|w| w == s);
    let sparse = match format {
        SparseFormat::Pax00 => has(b"GNU.sparse.offset="),
        SparseFormat::Pax01 => has(b"GNU.sparse.map="),
        SparseFormat::Pax10 => has(b"GNU.sparse.major=1") && has(b"GNUSparseFile."),
        SparseFormat::OldGnu => tar.get(156) == Some(&b'S'),
    };
    ensure!(
        sparse,
        "GNU tar wrote no {format:?} sparse entries for files with holes in {} \
         (does its filesystem keep holes?)",
        dir.display()
    );
    Ok(tar)
}

/// GNU base-256 form of `v` in a numeric field of `len` bytes: big-endian two's
/// complement with the top bit of the first byte set (always set for negatives).
pub fn base256(v: i64, len: usize) -> Vec<u8> {
    let be = v.to_be_bytes();
    let fill = if v < 0 { 0xff } else { 0x00 };
    let mut out = vec![fill; len.saturating_sub(8)];
    out.extend_from_slice(&be[8usize.saturating_sub(len)..]);
    out[0] |= 0x80;
    out
}

/// Recomputes the checksum of a ustar header after fields were patched.
fn fix_checksum(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// 1960-01-01T00:00:00Z as seconds since the epoch.
pub const MTIME_1960: i64 = -315_619_200;
/// A uid past the 7 octal digits of a ustar field (max 2,097,151).
pub const BIG_UID: u64 = 3_000_000;

/// Issue 6 item 5: one layer with `old.txt` whose mtime is [`MTIME_1960`] in base-256,
/// and `big-uid.txt` owned by [`BIG_UID`]:0 in base-256. Checked with GNU tar.
pub fn base256_tar(scratch: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut push = |name: &str, data: &[u8], patch: &dyn Fn(&mut [u8; 512])| {
        let mut h = raw_header(&RawEntry::file(name, data));
        patch(&mut h);
        fix_checksum(&mut h);
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    };
    push("old.txt", b"from 1960\n", &|h| {
        h[136..148].copy_from_slice(&base256(MTIME_1960, 12))
    });
    push("big-uid.txt", b"big uid\n", &|h| {
        h[108..116].copy_from_slice(&base256(BIG_UID as i64, 8))
    });
    out.extend(std::iter::repeat_n(0u8, 1024));
    // GNU tar must read it as meant.
    let f = scratch.join("base256.tar");
    std::fs::write(&f, &out)?;
    let list = gnu_tar(
        &["--numeric-owner", "--full-time", "-tvf", "base256.tar"],
        scratch,
    )?;
    let list = String::from_utf8_lossy(&list);
    ensure!(
        list.contains("1960-01-01 00:00:00 old.txt") && list.contains(&format!("{BIG_UID}/0")),
        "GNU tar reads the base-256 tar differently: {list}"
    );
    Ok(out)
}

/// Issue 6 item 6: `tar` without its two end-of-archive zero blocks, cut right after the
/// last entry's data padding. Checked: GNU tar lists every entry of it.
pub fn without_eof_blocks(scratch: &Path) -> Result<Vec<u8>> {
    let full = tar_of(&[
        Entry::dir("data"),
        Entry::file("data/a", b"first\n".to_vec()),
        Entry::file("data/b", noise(1000, 3)),
    ]);
    ensure!(
        full.len() >= 1024 && full[full.len() - 1024..].iter().all(|&b| b == 0),
        "fixture tar does not end in two zero blocks"
    );
    let cut = full[..full.len() - 1024].to_vec();
    let f = scratch.join("no-eof.tar");
    std::fs::write(&f, &cut)?;
    let list = gnu_tar(&["-tf", "no-eof.tar"], scratch)?;
    ensure!(
        String::from_utf8_lossy(&list) == "data/\ndata/a\ndata/b\n",
        "GNU tar lists the cut tar as {:?}",
        String::from_utf8_lossy(&list)
    );
    Ok(cut)
}

/// Damaged layers that must stay errors (issue 6 items 5 and 6), as
/// (name, tar, a token the error message must contain, a phrase it must not contain).
/// - `cut-inside-entry`: the stream ends 500 bytes into a 1,000-byte file's data.
/// - `junk-after-eof`: 512 nonzero bytes follow a valid end-of-archive marker; the
///   message must not claim the marker is missing.
/// - `negative-size`: a file whose base-256 size is -1; the message names the entry.
pub fn damaged_layers() -> Vec<(&'static str, Vec<u8>, &'static str, &'static str)> {
    let full = tar_of(&[
        Entry::file("first", b"ok\n".to_vec()),
        Entry::file("cut-here", noise(1000, 9)),
    ]);
    // first: header + 1 data block; cut-here: header at 1024, data from 1536.
    let cut = full[..1536 + 500].to_vec();
    let mut junk = full.clone();
    junk.extend(noise(512, 10).iter().map(|b| b | 1));
    let mut neg = raw_header(&RawEntry::file("neg-size", b""));
    neg[124..136].copy_from_slice(&base256(-1, 12));
    fix_checksum(&mut neg);
    let mut negative = neg.to_vec();
    negative.extend(std::iter::repeat_n(0u8, 1024));
    vec![
        ("cut-inside-entry", cut, "", ""),
        ("junk-after-eof", junk, "", "no end-of-archive marker"),
        ("negative-size", negative, "neg-size", ""),
    ]
}

/// A zstd skippable frame: magic `0x184D2A50 + nibble` (LE), u32 LE size, payload.
pub fn skippable_frame(nibble: u8, payload: &[u8]) -> Vec<u8> {
    assert!(nibble <= 0xf, "skippable frame magic nibble");
    let mut f = (0x184D_2A50u32 + u32::from(nibble)).to_le_bytes().to_vec();
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// Issue 6 item 7: zstd blobs of the layer tars `tars` starting with skippable frames.
/// Blob 0: one skippable frame (magic `50 2a 4d 18`, 16 bytes) then one zstd frame.
/// Blob 1 (pzstd shape): the tar in two zstd frames, each preceded by a skippable frame
/// (magic `5f 2a 4d 18`) holding the next frame's size. Checked with `zstd -d`.
pub fn zstd_with_skippable_frames(tars: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let mut blobs = Vec::new();
    for (i, tar) in tars.iter().enumerate() {
        let blob = if i % 2 == 0 {
            let mut b = skippable_frame(0, b"layerctl-e2e-16b");
            b.extend(zstd_checked(tar));
            b
        } else {
            let (x, y) = tar.split_at(tar.len() / 2);
            let mut b = Vec::new();
            for part in [x, y] {
                let frame = zstd_checked(part);
                b.extend(skippable_frame(0xf, &(frame.len() as u32).to_le_bytes()));
                b.extend(frame);
            }
            b
        };
        let mut child = Command::new("zstd")
            .args(["-d", "-c", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run `zstd -d` to check the skippable-frame blobs")?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = blob.clone();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output()?;
        writer.join().expect("writer thread")?;
        if !out.status.success() || out.stdout != *tar {
            bail!(
                "zstd -d does not give the layer tar back from blob {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        blobs.push(blob);
    }
    Ok(blobs)
}

/// Two small layers for the skippable-frame zstd image.
pub fn zstd_layers() -> Vec<Vec<u8>> {
    vec![
        tar_of(&[
            Entry::dir("z"),
            Entry::file("z/one", b"layer 0 behind a skippable frame\n".to_vec()),
        ]),
        tar_of(&[
            Entry::dir("z"),
            Entry::file("z/two", noise(20_000, 5)),
            Entry::whiteout("z/one"),
        ]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base256_encoding() {
        // -315619200 = 0xFFFF_FFFF_ED30_0880 in 64-bit two's complement.
        assert_eq!(
            base256(MTIME_1960, 12),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xed, 0x30, 0x08, 0x80]
        );
        assert_eq!(base256(3_000_000, 8), [0x80, 0, 0, 0, 0, 0x2d, 0xc6, 0xc0]);
    }

    #[test]
    fn skippable_magic() {
        assert_eq!(&skippable_frame(0, b"")[..4], &[0x50, 0x2a, 0x4d, 0x18]);
        assert_eq!(&skippable_frame(0xf, b"")[..4], &[0x5f, 0x2a, 0x4d, 0x18]);
    }
}
