use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::*;
use crate::whiteout::WhiteoutFormat;

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn names(tar: &[u8]) -> Vec<String> {
    tar::Archive::new(tar)
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

/// An aufs-format top branch (`.wh.` files, `.wh..wh..opq`) over a lower tree exports
/// the same bytes as the two full trees it stands for.
#[test]
fn aufs_top_and_full_trees_export_the_same_bytes() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper, merged) = (
        t.path().join("lower"),
        t.path().join("upper"),
        t.path().join("merged"),
    );
    fs::create_dir_all(lower.join("d/sub")).unwrap();
    fs::write(lower.join("d/keep"), "old").unwrap();
    fs::write(lower.join("d/old"), "o").unwrap();
    fs::write(lower.join("d/sub/x"), "x").unwrap();
    fs::write(lower.join("gone"), "g").unwrap();
    fs::write(lower.join("same"), "s").unwrap();
    fs::create_dir(lower.join("m")).unwrap();
    fs::write(lower.join("m/a"), "a").unwrap();
    // The layer, in aufs format.
    fs::create_dir_all(upper.join("d")).unwrap();
    fs::write(upper.join("d/.wh..wh..opq"), "").unwrap();
    fs::write(upper.join("d/keep"), "new!").unwrap();
    fs::write(upper.join(".wh.gone"), "").unwrap();
    fs::write(upper.join(".wh.never_there"), "").unwrap();
    fs::create_dir(upper.join("m")).unwrap();
    fs::write(upper.join("m/b"), "b").unwrap();
    symlink("m/b", upper.join("lnk")).unwrap();
    // The same layer as a full tree.
    cp_a(&lower, &merged);
    fs::remove_dir_all(merged.join("d")).unwrap();
    fs::create_dir(merged.join("d")).unwrap();
    cp_a(&upper.join("d/keep"), &merged.join("d/keep"));
    fs::remove_file(merged.join("gone")).unwrap();
    cp_a(&upper.join("m/b"), &merged.join("m/b"));
    cp_a(&upper.join("lnk"), &merged.join("lnk"));
    for root in [&upper, &merged] {
        fs::set_permissions(root.join("d"), fs::Permissions::from_mode(0o750)).unwrap();
        for d in ["d", "m"] {
            set_mtime(&root.join(d), 1_000_000);
        }
    }
    let top = DiffSource::Top(LayerStack::new(
        vec![upper.clone(), lower.clone()],
        WhiteoutFormat::Aufs,
    ));
    let trees = DiffSource::Trees {
        layer: merged.clone(),
        parent: Some(lower.clone()),
    };
    let (a, b) = (
        write_diff(&top, Vec::new()).unwrap(),
        write_diff(&trees, Vec::new()).unwrap(),
    );
    assert_eq!(
        names(&a),
        [
            "d/",
            "d/keep",
            "d/.wh.old",
            "d/.wh.sub",
            ".wh.gone",
            "lnk",
            "m/",
            "m/b"
        ]
    );
    assert!(a == b, "{:?}\n{:?}", names(&a), names(&b));
    let list = |s: &DiffSource| -> Vec<String> {
        changes(s).unwrap().iter().map(|c| c.to_string()).collect()
    };
    assert_eq!(list(&top), list(&trees));
    assert_eq!(size(&top).unwrap(), 4 + 1);
    assert_eq!(size(&trees).unwrap(), 4 + 1);
}

/// A writer that truncates (or appends to) a file when the first header reaches it:
/// deterministic, no threads.
struct Hook<'a> {
    file: &'a Path,
    action: fn(&Path),
    fired: bool,
    out: Vec<u8>,
}

impl Write for Hook<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.fired {
            self.fired = true;
            (self.action)(self.file);
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn export_with_hook(action: fn(&Path)) -> (String, Vec<u8>) {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("f");
    fs::write(&f, vec![5u8; 200_000]).unwrap();
    let src = DiffSource::Trees {
        layer: t.path().to_path_buf(),
        parent: None,
    };
    let mut hook = Hook {
        file: &f,
        action,
        fired: false,
        out: Vec::new(),
    };
    let err = match write_diff(&src, &mut hook) {
        Ok(_) => panic!("export of a file changing size succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&f.display().to_string()), "{err}");
    (err, hook.out)
}

#[test]
fn truncated_file_is_an_error_naming_it_and_no_end_marker() {
    let (err, out) = export_with_hook(|p| {
        fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(10)
            .unwrap()
    });
    assert!(err.contains("shrank"), "{err}");
    // Header plus the 10 bytes that were there: never padded or terminated as if whole.
    assert_eq!(out.len(), 512 + 10);
}

#[test]
fn grown_file_is_an_error_naming_it() {
    let (err, out) = export_with_hook(|p| {
        let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
        f.write_all(b"more").unwrap();
    });
    assert!(err.contains("changed"), "{err}");
    assert_eq!(out.len(), 512 + 200_000, "no padding, no end marker");
}

/// Long names and link targets go into PAX records and read back whole; short ones
/// need no extended header.
#[test]
fn long_names_use_pax_and_read_back() {
    let t = tempfile::tempdir().unwrap();
    let deep = "d".repeat(200);
    let long_name = "f".repeat(150);
    fs::create_dir(t.path().join(&deep)).unwrap();
    fs::write(t.path().join(&deep).join(&long_name), "x").unwrap();
    let target = "t".repeat(180);
    symlink(&target, t.path().join("l")).unwrap();
    fs::write(t.path().join("short"), "s").unwrap();
    let src = DiffSource::Trees {
        layer: t.path().to_path_buf(),
        parent: None,
    };
    let tar = write_diff(&src, Vec::new()).unwrap();
    let mut a = tar::Archive::new(&tar[..]);
    let mut got = Vec::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        got.push((String::from_utf8_lossy(&e.path_bytes()).into_owned(), link));
    }
    assert_eq!(
        got,
        [
            (format!("{deep}/"), None),
            (format!("{deep}/{long_name}"), None),
            ("l".to_owned(), Some(target)),
            ("short".to_owned(), None),
        ]
    );
    // The raw stream: the last entry is a bare ustar header (no PAX before it).
    let raw: Vec<u8> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .raw(true)
        .map(|e| e.unwrap().header().entry_type().as_byte())
        .collect();
    assert_eq!(raw, [b'x', b'5', b'x', b'0', b'x', b'2', b'0']);
    let mut rest = Vec::new();
    (&tar[tar.len() - 1024..]).read_to_end(&mut rest).unwrap();
    assert!(rest.iter().all(|&b| b == 0), "ends with two zero blocks");
}

/// GNU tar reads the format: the same names, long ones included, and extracting gives
/// the content, modes, mtimes, xattrs and hard links.
#[test]
fn gnu_tar_reads_the_export() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let deep = format!("{}/{}", "a".repeat(120), "b".repeat(120));
    fs::create_dir_all(src.join(&deep)).unwrap();
    let long = format!("{deep}/{}", "c".repeat(130));
    fs::write(src.join(&long), "long").unwrap();
    fs::write(src.join("f"), "content").unwrap();
    fs::set_permissions(src.join("f"), fs::Permissions::from_mode(0o4751)).unwrap();
    set_mtime(&src.join("f"), 1_234_567_890);
    xattr::set(src.join("f"), "user.k", b"v").unwrap();
    fs::hard_link(src.join("f"), src.join("g")).unwrap();
    symlink("f", src.join("s")).unwrap();
    let tar = write_diff(
        &DiffSource::Trees {
            layer: src.clone(),
            parent: None,
        },
        Vec::new(),
    )
    .unwrap();
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let mut child = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=user.*", "-xpf", "-", "-C"])
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "GNU tar refused the export"
    );
    assert_eq!(fs::read(out.join(&long)).unwrap(), b"long");
    let (f, g) = (
        fs::symlink_metadata(out.join("f")).unwrap(),
        fs::symlink_metadata(out.join("g")).unwrap(),
    );
    assert_eq!(f.ino(), g.ino(), "hard link");
    assert_eq!(f.mode() & 0o7777, 0o4751);
    assert_eq!(f.mtime(), 1_234_567_890);
    assert_eq!(
        xattr::get(out.join("f"), "user.k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(fs::read_link(out.join("s")).unwrap(), Path::new("f"));
}

/// A file or directory whose name starts with `.wh.` (a vfs or overlay2 container can
/// make one) cannot be exported: in the tar it would be a whiteout, and the layer would
/// lose it (and no longer match its own tar). The export fails naming the entry.
#[test]
fn a_name_starting_with_wh_is_refused_naming_it() {
    for name in ["tmp/.wh.notreally", ".wh.dir/inner"] {
        let t = tempfile::tempdir().unwrap();
        let (parent, layer) = (t.path().join("parent"), t.path().join("layer"));
        fs::create_dir_all(parent.join("tmp")).unwrap();
        cp_a(&parent, &layer);
        let p = layer.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "hidden").unwrap();
        let src = DiffSource::Trees {
            layer: layer.clone(),
            parent: Some(parent.clone()),
        };
        let first = Path::new(name)
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .last()
            .unwrap();
        let bad = if name.starts_with(".wh.") {
            first
        } else {
            Path::new(name)
        };
        match write_diff(&src, Vec::new()) {
            Err(DriverError::UnsafeEntry { entry, reason }) => {
                assert_eq!(Path::new(&entry), bad, "{name}");
                assert!(reason.contains(".wh."), "{reason}");
            }
            other => panic!("{name}: expected UnsafeEntry, got {other:?}"),
        }
        // The flat export (no parent) refuses it too.
        let flat = DiffSource::Trees {
            layer,
            parent: None,
        };
        assert!(matches!(
            write_diff(&flat, Vec::new()),
            Err(DriverError::UnsafeEntry { .. })
        ));
    }
}
