//! Test helpers for tar apply: a raw tar writer that accepts hostile names (the tar
//! crate's `set_path` refuses `..`), and a sandbox that checks nothing changed outside
//! the layer root.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use driver_core::{apply_tar, ApplyOptions, ApplyStats, DriverError, WhiteoutFormat};
use tar::{EntryType, Header};

/// Field width of the name and linkname fields of a tar header.
const NAME_FIELD: usize = 100;

/// Metadata of one raw entry.
#[derive(Debug, Clone)]
pub struct E {
    pub name: Vec<u8>,
    pub ty: EntryType,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub data: Vec<u8>,
    pub major: u32,
    pub minor: u32,
    pub pax: Vec<(String, Vec<u8>)>,
}

impl E {
    pub fn new(name: impl AsRef<[u8]>, ty: EntryType) -> Self {
        E {
            name: name.as_ref().to_vec(),
            ty,
            link: Vec::new(),
            mode: if ty == EntryType::Directory {
                0o755
            } else {
                0o644
            },
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            data: Vec::new(),
            major: 0,
            minor: 0,
            pax: Vec::new(),
        }
    }
    pub fn mode(mut self, m: u32) -> Self {
        self.mode = m;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, t: u64) -> Self {
        self.mtime = t;
        self
    }
    pub fn data(mut self, d: impl AsRef<[u8]>) -> Self {
        self.data = d.as_ref().to_vec();
        self
    }
    pub fn link(mut self, l: impl AsRef<[u8]>) -> Self {
        self.link = l.as_ref().to_vec();
        self
    }
    pub fn dev(mut self, major: u32, minor: u32) -> Self {
        self.major = major;
        self.minor = minor;
        self
    }
    pub fn pax(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.pax.push((key.to_string(), value.as_ref().to_vec()));
        self
    }
    pub fn xattr(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.pax(&format!("SCHILY.xattr.{name}"), value)
    }
}

pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> E {
    E::new(name, EntryType::Regular).data(data)
}
pub fn dir(name: impl AsRef<[u8]>) -> E {
    E::new(name, EntryType::Directory)
}
pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
    E::new(name, EntryType::Symlink).link(target).mode(0o777)
}
pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
    E::new(name, EntryType::Link).link(target)
}

/// Writes `entries` as a GNU tar with raw (unchecked) names, long names as GNU
/// `L`/`K` records.
pub fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        append(&mut b, e);
    }
    b.into_inner().unwrap()
}

fn long_record(b: &mut tar::Builder<Vec<u8>>, ty: EntryType, value: &[u8]) {
    let mut h = Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(ty);
    h.set_mode(0o644);
    let mut data = value.to_vec();
    data.push(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data.as_slice()).unwrap();
}

pub fn append(b: &mut tar::Builder<Vec<u8>>, e: &E) {
    if !e.pax.is_empty() {
        b.append_pax_extensions(e.pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .unwrap();
    }
    if e.name.len() > NAME_FIELD {
        long_record(b, EntryType::GNULongName, &e.name);
    }
    if e.link.len() > NAME_FIELD {
        long_record(b, EntryType::GNULongLink, &e.link);
    }
    let mut h = Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        let n = e.name.len().min(NAME_FIELD);
        g.name[..n].copy_from_slice(&e.name[..n]);
        let l = e.link.len().min(NAME_FIELD);
        g.linkname[..l].copy_from_slice(&e.link[..l]);
    }
    h.set_entry_type(e.ty);
    h.set_mode(e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    h.set_size(e.data.len() as u64);
    if matches!(e.ty, EntryType::Char | EntryType::Block) {
        h.set_device_major(e.major).unwrap();
        h.set_device_minor(e.minor).unwrap();
    }
    h.set_cksum();
    b.append(&h, e.data.as_slice()).unwrap();
}

/// A temp dir holding the layer `root/`, a `sentinel/` sibling that must stay empty,
/// and a `sibling` file that must stay unchanged.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    before: BTreeMap<PathBuf, (u32, u64, i64)>,
}

impl Sandbox {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::create_dir(tmp.path().join("sentinel")).unwrap();
        fs::write(tmp.path().join("sibling"), b"keep").unwrap();
        let mut s = Sandbox {
            tmp,
            root,
            before: BTreeMap::new(),
        };
        s.before = s.outside();
        s
    }

    /// Everything under the temp dir but outside root: path -> (mode, size, mtime).
    fn outside(&self) -> BTreeMap<PathBuf, (u32, u64, i64)> {
        let mut m = BTreeMap::new();
        for ent in walkdir::WalkDir::new(self.tmp.path())
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| e.path() != self.root)
        {
            let ent = ent.unwrap();
            if ent.path() == self.tmp.path() {
                continue;
            }
            let md = ent.path().symlink_metadata().unwrap();
            m.insert(ent.path().to_path_buf(), (md.mode(), md.size(), md.mtime()));
        }
        m
    }

    /// Takes the current outside state as the reference (after test setup).
    pub fn rebaseline(&mut self) {
        self.before = self.outside();
    }

    /// Asserts nothing outside root appeared, vanished or changed.
    pub fn assert_contained(&self) {
        assert_eq!(
            self.outside(),
            self.before,
            "something changed outside the layer root"
        );
    }

    pub fn apply(&self, tar: &[u8], format: WhiteoutFormat) -> Result<ApplyStats, DriverError> {
        let mut opts = ApplyOptions::new(format);
        // Unprivileged runs cannot chown; tests of owners need root (need_root).
        opts.preserve_owners = is_root();
        apply_tar(&self.root, &mut &tar[..], &opts)
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// A path under /tmp that does not exist (for symlink-escape targets).
pub fn fresh_tmp_name(tag: &str) -> PathBuf {
    let p = PathBuf::from(format!(
        "/tmp/layerctl-apply-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    assert!(!p.exists());
    p
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips (or fails under LAYERCTL_REQUIRE_PRIVILEGED=1) a test needing root.
pub fn need_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if driver_core::privileged_required() {
        panic!("{test} needs root");
    }
    eprintln!("skipping {test}: needs root");
    false
}

/// Asserts `err` is UnsafeEntry naming `entry`.
#[track_caller]
pub fn assert_unsafe(err: &DriverError, entry: &str) {
    match err {
        DriverError::UnsafeEntry { entry: e, .. } => assert_eq!(e, entry, "{err}"),
        other => panic!("expected UnsafeEntry for {entry:?}, got {other:?}"),
    }
    assert!(err.to_string().contains(entry), "{err}");
}

pub fn exists_nofollow(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}
