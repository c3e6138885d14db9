//! Fuzz harness of driver-core's tar apply, shared by the `tar_apply` fuzz target and
//! the regression test `driver-core/tests/fuzz_regressions.rs` (included by `#[path]`).
//!
//! One input = one layer tar applied into a fresh layer root inside a sandbox:
//! ```text
//! <sandbox>/outside/            files that must never change (symlinks in the layer
//!                               root and in the lower layer point here)
//! <sandbox>/lower/              the layer below (overlay or aufs form), must not change
//! <sandbox>/root-<n>/           the layer root the tar is applied to, removed after
//! ```
//! Byte 0 of the input chooses the form: bit 0 raw (the rest is the tar as is) or
//! structured (the rest is decoded into entries whose names come from a small alphabet
//! of dangerous components: `..`, `.wh.*`, opaque markers, symlinks that point outside,
//! absolute names, the sandbox's absolute path), bits 1-2 the whiteout format (vfs
//! `Delete`, `Overlay` or `Aufs`; the last two over the lower layer).
//!
//! Checked after every apply, whether it succeeded or was refused: `outside/` and
//! `lower/` are byte-for-byte, mode-for-mode unchanged, the sandbox holds nothing new
//! besides the layer root, and a successful `Delete`/`Overlay` apply left no `.wh.`
//! name in the root (whiteouts are converted). Any violation panics (a fuzz finding).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use driver_core::{apply_tar, ApplyOptions, LayerStack, WhiteoutFormat};

/// A tree as data: relative path -> (kind, content or link target, mode, uid).
pub type Tree = BTreeMap<String, (char, Vec<u8>, u32, u32)>;

/// The fixed directories every input is applied next to.
pub struct Sandbox {
    pub base: tempfile::TempDir,
    outside: PathBuf,
    lower: PathBuf,
    outside_tree: Tree,
    lower_tree: Tree,
    n: AtomicU64,
}

/// Snapshot of `dir`, never following symlinks.
pub fn snapshot(dir: &Path) -> Tree {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false) {
        let Ok(e) = e else { continue };
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let Ok(md) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        let ft = md.file_type();
        let (k, data) = if ft.is_symlink() {
            (
                'l',
                fs::read_link(e.path())
                    .map(|t| t.into_os_string().into_encoded_bytes())
                    .unwrap_or_default(),
            )
        } else if ft.is_dir() {
            ('d', Vec::new())
        } else if ft.is_file() {
            ('f', fs::read(e.path()).unwrap_or_default())
        } else {
            ('o', Vec::new())
        };
        m.insert(rel, (k, data, md.mode(), md.uid()));
    }
    m
}

fn populate(dir: &Path, outside: &Path) {
    fs::create_dir_all(dir.join("a/b")).unwrap();
    fs::write(dir.join("a/f"), b"lower a/f").unwrap();
    fs::write(dir.join("c"), b"lower c").unwrap();
    fs::create_dir_all(dir.join("d")).unwrap();
    fs::write(dir.join("d/x"), b"lower d/x").unwrap();
    symlink("a", dir.join("s")).unwrap();
    symlink(outside, dir.join("esc")).unwrap();
    symlink("../outside", dir.join("rel")).unwrap();
    symlink("../../../../../../..", dir.join("up")).unwrap();
}

impl Sandbox {
    /// Makes the sandbox in `$TMPDIR`.
    pub fn new() -> Sandbox {
        let base = tempfile::Builder::new()
            .prefix("layerctl-fuzz-apply-")
            .tempdir()
            .unwrap();
        let outside = base.path().join("outside");
        let lower = base.path().join("lower");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("keep"), b"must not change").unwrap();
        fs::write(outside.join("sub/keep"), b"must not change").unwrap();
        fs::create_dir_all(&lower).unwrap();
        populate(&lower, &outside);
        let outside_tree = snapshot(&outside);
        let lower_tree = snapshot(&lower);
        Sandbox {
            base,
            outside,
            lower,
            outside_tree,
            lower_tree,
            n: AtomicU64::new(0),
        }
    }

    /// Applies one fuzz input and checks the invariants (panics on a violation).
    pub fn run(&self, data: &[u8]) {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        let tar = if mode & 1 == 0 {
            rest.to_vec()
        } else {
            build_tar(rest, &self.outside)
        };
        let format = match (mode >> 1) & 3 {
            0 | 3 => WhiteoutFormat::Delete,
            1 => WhiteoutFormat::Overlay,
            _ => WhiteoutFormat::Aufs,
        };
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let root = self.base.path().join(format!("root-{n}"));
        fs::create_dir(&root).unwrap();
        let mut opts = ApplyOptions::new(format);
        if format == WhiteoutFormat::Delete {
            // A full-tree layer: the tree below is in the root itself.
            populate(&root, &self.outside);
        } else {
            opts = opts.with_lower(LayerStack::new(vec![self.lower.clone()], format));
        }
        let result = apply_tar(&root, &mut &tar[..], &opts);
        assert_eq!(
            snapshot(&self.outside),
            self.outside_tree,
            "a write escaped the layer root into outside/ ({result:?})"
        );
        assert_eq!(
            snapshot(&self.lower),
            self.lower_tree,
            "apply changed the lower layer ({result:?})"
        );
        let mut names: Vec<String> = fs::read_dir(self.base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let want_root = format!("root-{n}");
        assert!(
            names
                .iter()
                .all(|x| x == "outside" || x == "lower" || *x == want_root),
            "a write escaped the layer root into the sandbox: {names:?} ({result:?})"
        );
        if result.is_ok() && format != WhiteoutFormat::Aufs {
            for path in snapshot(&root).keys() {
                let name = path.rsplit('/').next().unwrap_or(path);
                assert!(
                    !name.starts_with(".wh."),
                    "whiteout name {path:?} left in a {format:?} layer"
                );
            }
        }
        if let Err(e) = make_removable(&root).and_then(|()| fs::remove_dir_all(&root)) {
            panic!("removing {}: {e}", root.display());
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

/// Directories a tar made unwritable (mode 0500...) would stop removal by a non-root
/// user; root removes them anyway, but chmod keeps the harness usable unprivileged.
fn make_removable(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if e.file_type().is_dir() {
            let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o700));
        }
    }
    Ok(())
}

/// Name components the structured form picks from.
const COMPONENTS: &[&str] = &[
    "a",
    "b",
    "c",
    "d",
    "s",
    "esc",
    "rel",
    "up",
    "..",
    ".",
    "",
    ".wh.a",
    ".wh.c",
    ".wh.esc",
    ".wh..wh..opq",
    ".wh.",
    ".wh..wh.plnk",
    "x",
];

/// Link targets the structured form picks from (`@` is the sandbox's `outside/`).
const TARGETS: &[&str] = &[
    "a", "c", "a/f", "s", "s/f", "../a", "/a", "..", "../..", "@", "@/keep", "/", "esc",
    "esc/keep", "rel/keep", "up", "x", "d/x", "./c",
];

/// Decodes `data` into a tar of up to 32 entries, 5 bytes each:
/// kind, name, name, link target, mode/size.
pub fn build_tar(data: &[u8], outside: &Path) -> Vec<u8> {
    let out = outside.to_string_lossy();
    let mut tar = Vec::new();
    for op in data.chunks(5).take(32) {
        let b = |i: usize| op.get(i).copied().unwrap_or(0) as usize;
        let depth = 1 + b(1) % 3;
        let mut name = String::new();
        let mut seed = b(1) / 3 + b(2) * 7;
        for i in 0..depth {
            if i > 0 {
                name.push('/');
            }
            name.push_str(COMPONENTS[seed % COMPONENTS.len()]);
            seed /= COMPONENTS.len();
            seed += b(2);
        }
        let target = TARGETS[b(3) % TARGETS.len()].replace('@', &out);
        let kind = b(0) % 9;
        let mode = 0o7777 & ((b(4) as u32) << 3 | 0o4);
        let data_len = b(4) % 5;
        let (ty, link, body): (u8, &str, Vec<u8>) = match kind {
            0 | 7 => (b'0', "", vec![b'z'; data_len]),
            1 => (b'5', "", Vec::new()),
            2 => (b'2', &target, Vec::new()),
            3 => (b'1', &target, Vec::new()),
            4 => (b'6', "", Vec::new()),
            5 => (b'3', "", Vec::new()),
            6 => {
                // A PAX header renaming the next entry to the link target.
                let rec = pax_record("path", &target);
                push_entry(&mut tar, "PaxHeaders/x", b'x', "", 0o644, rec.as_bytes());
                (b'0', "", vec![b'p'; data_len])
            }
            _ => (b'7', "", vec![b'c'; data_len]),
        };
        let mode = if ty == b'5' { mode | 0o700 } else { mode };
        push_entry(&mut tar, &name, ty, link, mode, &body);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}")
}

/// Appends one raw GNU header (names cut to 100 bytes, no validation) and its data.
fn push_entry(tar: &mut Vec<u8>, name: &str, ty: u8, link: &str, mode: u32, data: &[u8]) {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name.as_bytes()[..n]);
    let field = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    field(&mut h, 100, 8, u64::from(mode));
    field(&mut h, 108, 8, 0);
    field(&mut h, 116, 8, 0);
    field(&mut h, 124, 12, data.len() as u64);
    field(&mut h, 136, 12, 1_000_000_000);
    h[156] = ty;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link.as_bytes()[..l]);
    h[257..263].copy_from_slice(b"ustar ");
    h[263..265].copy_from_slice(b" \0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    tar.extend_from_slice(&h);
    tar.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    tar.extend(std::iter::repeat_n(0u8, pad));
}
