use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::Command;
use tar::EntryType;

use super::*;

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn list(changes: &[Change]) -> Vec<String> {
    changes.iter().map(|c| c.to_string()).collect()
}

fn base(root: &Path) {
    fs::create_dir_all(root.join("a/sub")).unwrap();
    fs::write(root.join("a/f"), b"one").unwrap();
    fs::write(root.join("a/sub/g"), b"g").unwrap();
    fs::create_dir(root.join("b")).unwrap();
    fs::write(root.join("b/x"), b"x").unwrap();
    fs::write(root.join("c"), b"c").unwrap();
    fs::write(root.join("e"), b"e").unwrap();
    symlink("a/f", root.join("l")).unwrap();
}

#[test]
fn no_parent_is_all_add_sorted() {
    let d = tempfile::tempdir().unwrap();
    base(d.path());
    let c = changes_dirs(d.path(), None).unwrap();
    assert_eq!(
        list(&c),
        [
            "A /a",
            "A /a/f",
            "A /a/sub",
            "A /a/sub/g",
            "A /b",
            "A /b/x",
            "A /c",
            "A /e",
            "A /l"
        ]
    );
}

#[test]
fn detects_add_modify_delete_like_docker_diff() {
    let d = tempfile::tempdir().unwrap();
    let parent = d.path().join("p");
    fs::create_dir(&parent).unwrap();
    base(&parent);
    let layer = d.path().join("l");
    cp_a(&parent, &layer);
    assert!(
        changes_dirs(&layer, Some(&parent)).unwrap().is_empty(),
        "copy has no changes"
    );

    fs::write(layer.join("new"), b"n").unwrap();
    fs::write(layer.join("a/f"), b"two").unwrap(); // same dir, content+mtime change
    fs::remove_dir_all(layer.join("b")).unwrap();
    fs::set_permissions(layer.join("c"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir_all(layer.join("d/dd")).unwrap();
    fs::write(layer.join("d/dd/x"), b"x").unwrap();
    fs::remove_file(layer.join("e")).unwrap();
    fs::create_dir(layer.join("e")).unwrap();
    fs::write(layer.join("e/in"), b"in").unwrap();
    fs::remove_file(layer.join("l")).unwrap();
    symlink("a/sub", layer.join("l")).unwrap(); // same length? no: retarget
    xattr::set(layer.join("a/sub/g"), "user.k", b"v").unwrap();

    let c = changes_dirs(&layer, Some(&parent)).unwrap();
    assert_eq!(
        list(&c),
        [
            "C /a",
            "C /a/f",
            "C /a/sub",
            "C /a/sub/g",
            "D /b",
            "C /c",
            "A /d",
            "A /d/dd",
            "A /d/dd/x",
            "C /e",
            "A /e/in",
            "C /l",
            "A /new",
        ]
    );
    // new, a/f, a/sub/g (xattr), c (chmod), d/dd/x, e/in
    assert_eq!(diff_size(&layer, &c).unwrap(), 1 + 3 + 1 + 1 + 1 + 2);
}

#[test]
fn symlink_retarget_same_length_and_mtime_is_a_change() {
    let d = tempfile::tempdir().unwrap();
    let (p, l) = (d.path().join("p"), d.path().join("l"));
    fs::create_dir(&p).unwrap();
    symlink("aaaa", p.join("s")).unwrap();
    cp_a(&p, &l);
    fs::remove_file(l.join("s")).unwrap();
    symlink("bbbb", l.join("s")).unwrap();
    // Give it the parent's timestamps so only the target differs.
    let st = Command::new("touch")
        .args(["-h", "-r"])
        .arg(p.join("s"))
        .arg(l.join("s"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(list(&changes_dirs(&l, Some(&p)).unwrap()), ["C /s"]);
}

/// (path, type, data, link name, xattrs) of one tar entry.
type TarRow = (
    String,
    EntryType,
    Vec<u8>,
    Option<String>,
    Vec<(String, Vec<u8>)>,
);

fn read_tar(r: impl Read) -> Vec<TarRow> {
    let mut a = tar::Archive::new(r);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let ty = e.header().entry_type();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut xa = Vec::new();
        if let Some(p) = e.pax_extensions().unwrap() {
            for x in p {
                let x = x.unwrap();
                if let Some(n) = x.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xa.push((n.to_owned(), x.value_bytes().to_vec()));
                }
            }
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((path, ty, data, link, xa));
    }
    out
}

#[test]
fn export_writes_parents_whiteouts_links_and_xattrs() {
    let d = tempfile::tempdir().unwrap();
    let (p, l) = (d.path().join("p"), d.path().join("l"));
    fs::create_dir(&p).unwrap();
    base(&p);
    cp_a(&p, &l);
    fs::remove_file(l.join("a/sub/g")).unwrap();
    fs::write(l.join("a/h1"), b"hard").unwrap();
    fs::hard_link(l.join("a/h1"), l.join("a/h2")).unwrap();
    xattr::set(l.join("a/h1"), "user.test", b"val").unwrap();
    let long = "n".repeat(120);
    fs::create_dir_all(l.join(&long).join(&long)).unwrap();
    fs::write(l.join(&long).join(&long).join("f"), b"deep").unwrap();

    let changes = changes_dirs(&l, Some(&p)).unwrap();
    let entries = read_tar(export_changes(&l, &changes).unwrap());
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let lp = format!("{long}/{long}/f");
    assert_eq!(
        names,
        [
            "a/",
            "a/h1",
            "a/h2",
            "a/sub/",
            "a/sub/.wh.g",
            &format!("{long}/"),
            &format!("{long}/{long}/"),
            &lp,
        ]
    );
    assert_eq!(entries[1].2, b"hard");
    assert_eq!(entries[1].4, [("user.test".to_owned(), b"val".to_vec())]);
    assert_eq!(entries[2].1, EntryType::Link);
    assert_eq!(entries[2].3.as_deref(), Some("a/h1"));
    assert_eq!(entries[4].1, EntryType::Regular);
    assert!(entries[4].2.is_empty());
    assert_eq!(entries[7].2, b"deep");
}

#[test]
fn export_of_vanished_file_errors_at_end_of_stream() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("f"), b"x").unwrap();
    let changes = vec![Change {
        path: "/gone".into(),
        kind: ChangeKind::Add,
    }];
    let mut r = export_changes(d.path(), &changes).unwrap();
    let mut buf = Vec::new();
    let err = r.read_to_end(&mut buf).unwrap_err();
    assert!(err.to_string().contains("gone"), "{err}");
}

#[test]
fn dropping_reader_early_stops_writer() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("big"), vec![7u8; 4 << 20]).unwrap();
    let changes = changes_dirs(d.path(), None).unwrap();
    let mut r = export_changes(d.path(), &changes).unwrap();
    let mut buf = [0u8; 1024];
    r.read_exact(&mut buf).unwrap();
    drop(r); // must not hang
}

#[test]
fn export_skips_overlay_private_xattrs() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: trusted.* xattrs need root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("o")).unwrap();
    xattr::set(d.path().join("o"), "trusted.overlay.opaque", b"y").unwrap();
    xattr::set(d.path().join("o"), "user.keep", b"1").unwrap();
    let changes = changes_dirs(d.path(), None).unwrap();
    let entries = read_tar(export_changes(d.path(), &changes).unwrap());
    assert_eq!(entries[0].0, "o/");
    assert_eq!(entries[0].4, [("user.keep".to_owned(), b"1".to_vec())]);
}

#[test]
fn binary_xattr_pax_record_is_length_prefixed() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("f"), b"").unwrap();
    xattr::set(d.path().join("f"), "user.bin", b"a\nb\0c").unwrap();
    let changes = changes_dirs(d.path(), None).unwrap();
    let mut a = tar::Archive::new(export_changes(d.path(), &changes).unwrap());
    let mut entries = a.entries().unwrap().raw(true);
    let mut x = entries.next().unwrap().unwrap();
    assert_eq!(x.header().entry_type(), EntryType::XHeader);
    let mut data = Vec::new();
    x.read_to_end(&mut data).unwrap();
    let record = b"SCHILY.xattr.user.bin=a\nb\0c\n";
    let want = [
        format!("{} ", record.len() + 3).into_bytes(),
        record.to_vec(),
    ]
    .concat();
    assert_eq!(data, want);
}
