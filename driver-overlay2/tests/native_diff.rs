//! Whiteout conversion both ways: a tar with OCI whiteouts applied to an overlay2 layer
//! is stored in overlay's format (0/0 char device, opaque xattr) and exported back by
//! the native diff (whiteouts with the exporter's fixed metadata, an opaque directory as
//! one whiteout per name it hid). Also: the naive fallback for a non-direct parent.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::{can_mount, id, Env};
use driver_core::{CreateOpts, Driver, MountOpts};

const T: u64 = 1_600_000_000;

fn pax(b: &mut tar::Builder<Vec<u8>>, key: &str, val: &[u8]) {
    let rec_body = format!(" {key}=").len() + val.len() + 1;
    let mut len = rec_body + 1;
    while len != rec_body + len.to_string().len() {
        len = rec_body + len.to_string().len();
    }
    let mut data = format!("{len} {key}=").into_bytes();
    data.extend_from_slice(val);
    data.push(b'\n');
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeaders/x").unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
}

fn entry(
    b: &mut tar::Builder<Vec<u8>>,
    ty: tar::EntryType,
    path: &str,
    mode: u32,
    owner: (u64, u64),
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(ty);
    h.set_mode(mode);
    h.set_uid(owner.0);
    h.set_gid(owner.1);
    h.set_mtime(T);
    h.set_size(data.len() as u64);
    if ty == tar::EntryType::Char {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    match link {
        Some(l) => b.append_link(&mut h, path, l).unwrap(),
        None => b.append_data(&mut h, path, data).unwrap(),
    }
}

fn input_tar() -> Vec<u8> {
    use tar::EntryType::*;
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, Directory, "dev/", 0o755, (0, 0), b"", None);
    entry(&mut b, Char, "dev/null", 0o666, (0, 0), b"", None);
    entry(&mut b, Directory, "etc/", 0o755, (0, 0), b"", None);
    entry(
        &mut b,
        Regular,
        "etc/hosts",
        0o644,
        (1000, 1000),
        b"127.0.0.1 x\n",
        None,
    );
    entry(&mut b, Regular, "etc/.wh.passwd", 0o600, (5, 6), b"", None);
    entry(&mut b, Fifo, "fifo", 0o600, (0, 0), b"", None);
    entry(
        &mut b,
        Link,
        "hl",
        0o644,
        (1000, 1000),
        b"",
        Some("etc/hosts"),
    );
    entry(
        &mut b,
        Symlink,
        "lnk",
        0o777,
        (0, 0),
        b"",
        Some("etc/hosts"),
    );
    entry(&mut b, Directory, "opq/", 0o700, (7, 7), b"", None);
    entry(
        &mut b,
        Regular,
        "opq/.wh..wh..opq",
        0o700,
        (7, 7),
        b"",
        None,
    );
    entry(&mut b, Regular, "opq/keep", 0o640, (0, 0), b"keep", None);
    pax(&mut b, "SCHILY.xattr.user.foo", b"bar");
    entry(&mut b, Regular, "x", 0o4755, (0, 0), b"xx", None);
    b.into_inner().unwrap()
}

/// name -> (type, mode, uid, gid, mtime, content, link, xattrs)
type Entries = BTreeMap<
    String,
    (
        u8,
        u32,
        u64,
        u64,
        u64,
        Vec<u8>,
        Option<String>,
        Vec<(String, Vec<u8>)>,
    ),
>;

fn entries(tar: &[u8]) -> Entries {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(tar);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = Vec::new();
        if let Ok(Some(p)) = e.pax_extensions() {
            for x in p {
                let x = x.unwrap();
                if let Some(k) = x.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((k.to_owned(), x.value_bytes().to_vec()));
                }
            }
        }
        let h = e.header().clone();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let ty = h.entry_type().as_byte();
        let is_wh = name.rsplit('/').next().unwrap().starts_with(".wh.");
        // Apply does not keep whiteouts' times; opaque markers keep nothing but their name.
        let mtime = if is_wh { 0 } else { h.mtime().unwrap_or(0) };
        let (mode, uid, gid) = if name.ends_with(".wh..wh..opq") {
            (0, 0, 0)
        } else {
            (
                h.mode().unwrap_or(0),
                h.uid().unwrap_or(0),
                h.gid().unwrap_or(0),
            )
        };
        out.insert(name, (ty, mode, uid, gid, mtime, data, link, xattrs));
    }
    out
}

/// The parent of [`input_tar`]: what its whiteout and opaque directory delete.
fn base_tar() -> Vec<u8> {
    use tar::EntryType::*;
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, Directory, "etc/", 0o755, (0, 0), b"", None);
    entry(&mut b, Regular, "etc/passwd", 0o644, (0, 0), b"root", None);
    entry(&mut b, Directory, "opq/", 0o755, (0, 0), b"", None);
    entry(&mut b, Regular, "opq/keep", 0o644, (0, 0), b"old", None);
    entry(&mut b, Regular, "opq/old1", 0o644, (0, 0), b"1", None);
    entry(&mut b, Directory, "opq/old2/", 0o755, (0, 0), b"", None);
    entry(&mut b, Regular, "opq/old2/deep", 0o644, (0, 0), b"d", None);
    b.into_inner().unwrap()
}

#[test]
fn apply_then_native_diff_round_trips_whiteouts() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    let base = id("base");
    d.create(&base, None, &CreateOpts::default()).unwrap();
    d.apply_diff(&base, None, &mut &base_tar()[..]).unwrap();
    let l = id("layer");
    d.create(&l, Some(&base), &CreateOpts::default()).unwrap();
    let input = input_tar();
    let n = d.apply_diff(&l, Some(&base), &mut &input[..]).unwrap();
    assert_eq!(n, 12 + 4 + 2);

    // On disk: overlay's format.
    let dir = d.layer_dir(&l).unwrap();
    let wh = fs::symlink_metadata(dir.join("etc/passwd")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!((wh.uid(), wh.gid()), (5, 6), "whiteout owner kept");
    assert!(!dir.join("etc/.wh.passwd").exists());
    let mut v = [0u8; 4];
    let n = rustix::fs::lgetxattr(dir.join("opq"), "trusted.overlay.opaque", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"y");
    assert!(!dir.join("opq/.wh..wh..opq").exists());

    // Back out: the same entries, except that whiteouts carry the exporter's fixed
    // metadata and the opaque directory is one whiteout per name it hid.
    let mut out = Vec::new();
    d.diff(&l, Some(&base))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    let mut want = entries(&input);
    let canonical_wh = (b'0', 0o644, 0, 0, 0, Vec::new(), None, Vec::new());
    want.remove("opq/.wh..wh..opq")
        .expect("input has the marker");
    for w in ["etc/.wh.passwd", "opq/.wh.old1", "opq/.wh.old2"] {
        want.insert(w.to_owned(), canonical_wh.clone());
    }
    let got = entries(&out);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (k, w) in &want {
        assert_eq!(Some(w), got.get(k), "entry {k}");
    }
    // Applying the export to the same parent gives the same merged tree.
    let l2 = id("layer2");
    d.create(&l2, Some(&base), &CreateOpts::default()).unwrap();
    d.apply_diff(&l2, Some(&base), &mut &out[..]).unwrap();
    let (m1, m2) = (
        d.mount(&l, &MountOpts::default()).unwrap(),
        d.mount(&l2, &MountOpts::default()).unwrap(),
    );
    driver_core::conformance::assert_trees_equal(
        &m1,
        &m2,
        driver_core::conformance::MtimeCheck::Seconds,
    );
    assert_eq!(
        driver_core::conformance::tree_paths(&m2),
        [
            "dev",
            "dev/null",
            "etc",
            "etc/hosts",
            "fifo",
            "hl",
            "lnk",
            "opq",
            "opq/keep",
            "x"
        ]
    );
    d.unmount(&l).unwrap();
    d.unmount(&l2).unwrap();
    // Native changes agree with the tar: the whiteout and the hidden names are
    // deletions, the recreated directory and file modifications.
    let ch: Vec<String> = d
        .changes(&l, Some(&base))
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        ch,
        [
            "A /dev",
            "A /dev/null",
            "C /etc",
            "A /etc/hosts",
            "D /etc/passwd",
            "A /fifo",
            "A /hl",
            "A /lnk",
            "C /opq",
            "C /opq/keep",
            "D /opq/old1",
            "D /opq/old2",
            "A /x"
        ]
    );
    assert_eq!(d.diff_size(&l, Some(&base)).unwrap(), 12 + 4 + 2);
}

#[test]
fn diff_against_a_non_parent_falls_back_to_naive() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    let a = common::ro_layer(&d, "a", None, &[("one", "1"), ("two", "2")]);
    let b = id("b");
    d.create(&b, Some(&a), &CreateOpts::read_write()).unwrap();
    let c = id("c");
    d.create(&c, Some(&b), &CreateOpts::read_write()).unwrap();
    {
        let m = d.mount(&b, &MountOpts::default()).unwrap();
        fs::write(m.join("three"), "3").unwrap();
        d.unmount(&b).unwrap();
        let m = d.mount(&c, &MountOpts::default()).unwrap();
        fs::remove_file(m.join("one")).unwrap();
        fs::write(m.join("four"), "4").unwrap();
        d.unmount(&c).unwrap();
    }
    // c against its grandparent a: c's diff/ alone is not the change set.
    let ch: Vec<String> = d
        .changes(&c, Some(&a))
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(ch, ["A /four", "D /one", "A /three"]);
    let mut out = Vec::new();
    d.diff(&c, Some(&a)).unwrap().read_to_end(&mut out).unwrap();
    let names: Vec<String> = entries(&out).into_keys().collect();
    assert_eq!(names, [".wh.one", "four", "three"]);
    assert!(env.mounts().is_empty(), "naive diff released its mounts");
}
