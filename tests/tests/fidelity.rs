//! One image, one tree (issue 6, "Done means"): for every kind of layer that real
//! builders and registries produce and that a driver can get wrong, a small image is
//! imported on every driver of `harness::DRIVERS`, a container is created and mounted, and
//! - every driver gives the identical tree (type, mode incl. suid/sgid/sticky, owner,
//!   size and content, symlink target, device numbers, `user.*` xattrs, hard-link groups,
//!   mtimes of files), and
//! - that tree equals the expected tree written out below, from the OCI image-spec layer
//!   rules ("whiteouts apply to lower layers only", opaque dirs, changes applied as if onto
//!   the full tree below) and what GNU tar makes of the same bytes.
//!
//! The inputs come from `layerctl_tests::fidelity_inputs`. A case collects every
//! problem on every driver before it fails, one line per path and attribute.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use layerctl_tests::fidelity_inputs::{self as inputs, SparseFormat, Tree, BIG_UID, MTIME_1960};
use layerctl_tests::fixtures::{
    docker_save_of, noise, oci_archive_of, sample_image, sha256_digest, Compression, Expected,
    LayerBlob,
};
use layerctl_tests::harness::{self, Ctl, DriverSpec};
use layerctl_tests::tree::{compare_expected, compare_trees, snapshot, Node, Xattrs};

type Snap = BTreeMap<String, Node>;

/// How the image is handed to `layerctl import`.
#[derive(Clone, Copy, Debug)]
enum Format {
    /// `docker save` archive: layers stored uncompressed as they are.
    DockerSave,
    /// OCI archive: layer blobs as given (compressed or not) with their media types.
    OciArchive,
}

/// One image and the tree its container must show.
struct Case {
    name: &'static str,
    layers: Vec<LayerBlob>,
    format: Format,
    expected: Expected,
    /// Init-layer paths (`harness::INIT_PATHS`) this case checks; the others are left
    /// to the init-layer tests.
    checked_init: &'static [&'static str],
    /// More checks on the mounted tree (through symlinks, say).
    extra: fn(&Path) -> Result<()>,
}

fn no_extra(_: &Path) -> Result<()> {
    Ok(())
}

impl Case {
    fn new(name: &'static str, tars: Vec<Vec<u8>>, expected: Tree) -> Self {
        Case {
            name,
            layers: tars.into_iter().map(LayerBlob::plain).collect(),
            format: Format::DockerSave,
            expected: expected.build(),
            checked_init: &[],
            extra: no_extra,
        }
    }
}

/// Imports, creates, mounts and compares `case` on driver `d`. Returns the mounted tree
/// (None when it did not get that far) and every problem found.
fn on_driver(case: &Case, d: &DriverSpec) -> (Option<Snap>, Vec<String>) {
    let mut problems = Vec::new();
    let ctl = Ctl::new(d.name);
    let archive = match case.format {
        Format::DockerSave => {
            let tars: Vec<Vec<u8>> = case.layers.iter().map(|l| l.tar.clone()).collect();
            docker_save_of(case.name, &tars)
        }
        Format::OciArchive => oci_archive_of(&case.layers),
    };
    let path = ctl.write_work("image.tar", &archive);
    let r = ctl.run(&[
        "import".as_ref(),
        path.as_os_str(),
        "--name".as_ref(),
        case.name.as_ref(),
    ]);
    if r.code != 0 {
        problems.push(format!("import exit {}: {}", r.code, r.stderr.trim()));
        return (None, problems);
    }

    // DiffID = sha256 of each uncompressed layer tar, whatever its shape.
    let want: Vec<String> = case.layers.iter().map(|l| sha256_digest(&l.tar)).collect();
    let r = ctl.run(&["--json", "layers", case.name]);
    let got: Vec<String> = serde_json::from_str::<serde_json::Value>(&r.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|l| l["diff_id"].as_str().unwrap_or("").to_string())
        .collect();
    if got != want {
        problems.push(format!("layer DiffIDs {got:?}, expected {want:?}"));
    }

    let r = ctl.run(&["create", "c", case.name]);
    if r.code != 0 {
        problems.push(format!("create exit {}: {}", r.code, r.stderr.trim()));
        return (None, problems);
    }
    let r = ctl.run(&["mount", "c"]);
    if r.code != 0 {
        problems.push(format!("mount exit {}: {}", r.code, r.stderr.trim()));
        return (None, problems);
    }
    let mnt = Path::new(r.stdout.trim()).to_path_buf();
    let snap = match snapshot(&mnt, Xattrs::User) {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("snapshot of the mount: {e:#}"));
            return (None, problems);
        }
    };
    let skip = |p: &str| harness::is_init_path(p) && !case.checked_init.contains(&p);
    problems.extend(compare_expected(
        &case.expected,
        &snap,
        &harness::is_init_path,
        &skip,
    ));
    if let Err(e) = (case.extra)(&mnt) {
        problems.push(format!("{e:#}"));
    }
    for args in [["umount", "c"], ["rm", "c"], ["rmi", case.name]] {
        let r = ctl.run(&args);
        if r.code != 0 {
            problems.push(format!("{args:?} exit {}: {}", r.code, r.stderr.trim()));
        }
    }
    let r = ctl.run(&["check"]);
    if r.code != 0 {
        problems.push(format!("check exit {}: {}{}", r.code, r.stdout, r.stderr));
    }
    (Some(snap), problems)
}

/// Runs `case` on every driver, compares each tree with the expectation and the trees
/// with each other; fails listing every problem as `[driver] path: attribute ...`
/// (against the written-out tree) or `[a vs b] path: attribute expected <a's> got <b's>`.
fn run(case: Case) {
    let mut problems = Vec::new();
    let mut snaps: Vec<(&str, Snap)> = Vec::new();
    let drivers = harness::drivers(&format!("fidelity {}", case.name));
    for d in &drivers {
        let (snap, p) = on_driver(&case, d);
        problems.extend(p.into_iter().map(|p| format!("[{}] {p}", d.name)));
        if let Some(s) = snap {
            snaps.push((d.name, s));
        }
    }
    if let Some(((a, sa), rest)) = snaps.split_first() {
        for (b, sb) in rest {
            problems.extend(
                compare_trees(sa, sb)
                    .into_iter()
                    .map(|p| format!("[{a} vs {b}] {p}")),
            );
        }
    }
    assert!(
        problems.is_empty(),
        "fidelity case {} ({} drivers: {:?}):\n{}",
        case.name,
        drivers.len(),
        drivers.iter().map(|d| d.name).collect::<Vec<_>>(),
        problems.join("\n")
    );
}

/// Issue 6 item 1: a layer's entries below directories it has no entry for leave those
/// directories as the lower layer made them (OCI: a layer's changes apply onto the full
/// tree below it); opaque markers with or without their dir entry.
#[test]
fn implied_parents() {
    let t = Tree::new()
        .dir("a")
        .mode(0o700)
        .owner(1000, 1000)
        .xattr("user.implied", b"kept")
        .dir("a/b")
        .mode(0o751)
        .owner(1000, 1000)
        .file("a/b/old.txt", b"old\n")
        .file("a/b/new.txt", b"new in layer 1\n")
        .dir("tmp")
        .mode(0o1777)
        .file("tmp/old", b"lower tmp file\n")
        .file("tmp/x", b"x\n")
        // Opaque marker alone: d keeps its attributes and loses its lower children.
        .dir("d")
        .mode(0o750)
        .owner(1000, 1000)
        .dir("e")
        .mode(0o750)
        .owner(1000, 1000)
        .file("e/new", b"new in the opaque e\n")
        // Opaque marker with its dir entry: the entry's attributes.
        .dir("o")
        .mode(0o700)
        .owner(1000, 1000)
        .file("o/new", b"new in the opaque o\n");
    run(Case::new("implied-parents", inputs::implied_parents(), t));
}

fn usrmerge_extra(mnt: &Path) -> Result<()> {
    let sh = std::fs::read(mnt.join("bin/sh")).context("bin/sh does not resolve")?;
    ensure!(sh == b"#!sh\n", "bin/sh resolves to {sh:?}");
    let tool = std::fs::read(mnt.join("bin/newtool")).context("bin/newtool")?;
    ensure!(tool == b"new tool\n", "bin/newtool is {tool:?}");
    ensure!(
        std::fs::symlink_metadata(mnt.join("usr/lib/libc")).is_err(),
        "lib/libc (usr/lib/libc) still exists"
    );
    Ok(())
}

/// Issue 6 item 2: entries below a lower symlink (`bin -> usr/bin`) go where it points,
/// inside the root, and the symlink stays.
#[test]
fn usrmerge_relative() {
    let t = Tree::new()
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/sh", b"#!sh\n")
        .mode(0o755)
        .file("usr/bin/newtool", b"new tool\n")
        .mode(0o755)
        .dir("usr/lib")
        .symlink("bin", "usr/bin")
        .symlink("lib", "usr/lib");
    let mut c = Case::new("usrmerge", inputs::usrmerge(), t);
    c.extra = usrmerge_extra;
    run(c);
}

/// [`usrmerge_relative`] with absolute symlinks: resolved inside the root.
#[test]
fn usrmerge_absolute() {
    let t = Tree::new()
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/sh", b"#!sh\n")
        .mode(0o755)
        .file("usr/bin/newtool", b"new tool\n")
        .mode(0o755)
        .dir("usr/lib")
        .symlink("bin", "/usr/bin")
        .symlink("lib", "/usr/lib");
    run(Case::new("usrmerge-abs", inputs::usrmerge_absolute(), t));
}

/// Symlinked parents in a chain: `a -> b -> usr/x`.
#[test]
fn usrmerge_symlink_chain() {
    let t = Tree::new()
        .dir("usr")
        .dir("usr/x")
        .mode(0o750)
        .owner(1000, 1000)
        .file("usr/x/new", b"through two symlinks\n")
        .symlink("b", "usr/x")
        .symlink("a", "b");
    run(Case::new("symlink-chain", inputs::symlink_chain(), t));
}

/// Issue 6 item 3: a whiteout applies to lower layers only, wherever it stands in its
/// own layer.
#[test]
fn same_layer_whiteouts() {
    let t = Tree::new()
        .file("f", b"upper\n")
        .dir("d")
        .mode(0o700)
        .file("d/new", b"upper d/new\n")
        .dir("g")
        .mode(0o711)
        .file("g/new", b"upper g/new\n");
    run(Case::new(
        "same-layer-whiteouts",
        inputs::same_layer_whiteouts(),
        t,
    ));
}

/// Issue 6 item 4: GNU sparse files in `format` come out as the files GNU tar packed.
fn sparse(name: &'static str, format: SparseFormat) {
    let scratch = tempfile::Builder::new()
        .prefix("layerctl-e2e-sparse-")
        .tempdir_in(
            std::env::var_os("TMPDIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "/var/tmp".into()),
        )
        .expect("scratch dir");
    let tar = inputs::gnu_sparse_tar(scratch.path(), format)
        .unwrap_or_else(|e| panic!("building the {format:?} sparse layer with GNU tar: {e:#}"));
    let mut t = Tree::new();
    for (file, content) in inputs::sparse_files() {
        t = t.file(file, &content);
    }
    let mut c = Case::new(name, vec![tar], t);
    c.extra = |mnt| {
        // Informational: a driver should keep holes where the filesystem allows.
        for (file, _) in inputs::sparse_files() {
            let Ok(md) = std::fs::symlink_metadata(mnt.join(file)) else {
                continue;
            };
            eprintln!(
                "{file}: {} bytes, {} bytes allocated",
                md.len(),
                md.blocks() * 512
            );
        }
        Ok(())
    };
    run(c);
}

#[test]
fn sparse_pax_0_0() {
    sparse("sparse-pax-0.0", SparseFormat::Pax00);
}

#[test]
fn sparse_pax_0_1() {
    sparse("sparse-pax-0.1", SparseFormat::Pax01);
}

#[test]
fn sparse_pax_1_0() {
    sparse("sparse-pax-1.0", SparseFormat::Pax10);
}

#[test]
fn sparse_old_gnu() {
    sparse("sparse-old-gnu", SparseFormat::OldGnu);
}

/// Issue 6 item 5: base-256 numbers are two's complement (a 1960 mtime) and may exceed
/// the octal range (a uid of 3,000,000).
#[test]
fn base256_numbers() {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let tar = inputs::base256_tar(scratch.path()).expect("base-256 tar");
    let t = Tree::new()
        .file("old.txt", b"from 1960\n")
        .mtime(MTIME_1960)
        .file("big-uid.txt", b"big uid\n")
        .owner(BIG_UID, 0);
    run(Case::new("base256", vec![tar], t));
}

/// Issue 6 item 6: a tar that ends at an entry boundary without the two zero blocks is a
/// whole layer; its DiffID is the sha256 of exactly those bytes.
#[test]
fn no_end_of_archive_blocks() {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let tar = inputs::without_eof_blocks(scratch.path()).expect("tar without EOF blocks");
    let t = Tree::new()
        .dir("data")
        .file("data/a", b"first\n")
        .file("data/b", &noise(1000, 3));
    run(Case::new("no-eof-blocks", vec![tar], t));
}

/// Issue 6 items 5 and 6, the other side: a stream cut inside an entry, junk after the
/// end-of-archive marker and a negative size stay errors (exit 5) with messages that
/// say what is wrong.
#[test]
fn damaged_layers_are_refused() {
    let mut problems = Vec::new();
    for d in harness::drivers("fidelity damaged layers") {
        let ctl = Ctl::new(d.name);
        for (name, tar, must, must_not) in inputs::damaged_layers() {
            let f = ctl.write_work(&format!("{name}.tar"), &tar);
            let r = ctl.run(&["import".as_ref(), f.as_os_str()]);
            let msg = r.stderr.trim();
            if r.code != 5 {
                problems.push(format!(
                    "[{}] {name}: exit {}, expected 5: {msg}",
                    d.name, r.code
                ));
            } else if !msg.contains(must) {
                problems.push(format!(
                    "[{}] {name}: message does not name {must:?}: {msg}",
                    d.name
                ));
            } else if !must_not.is_empty() && msg.contains(must_not) {
                problems.push(format!(
                    "[{}] {name}: message says {must_not:?}: {msg}",
                    d.name
                ));
            }
        }
        let r = ctl.run(&["check"]);
        if r.code != 0 {
            problems.push(format!(
                "[{}] check after refused imports: {}{}",
                d.name, r.stdout, r.stderr
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "damaged layers:\n{}",
        problems.join("\n")
    );
}

/// Issue 6 item 7: zstd layers that start with skippable frames (OCI archive, media type
/// `tar+zstd`).
#[test]
fn zstd_skippable_frames() {
    let tars = inputs::zstd_layers();
    let blobs = inputs::zstd_with_skippable_frames(&tars).expect("zstd blobs");
    let t = Tree::new().dir("z").file("z/two", &noise(20_000, 5));
    let mut c = Case::new("zstd-skippable", Vec::new(), t);
    c.layers = tars
        .into_iter()
        .zip(blobs)
        .map(|(tar, blob)| LayerBlob {
            tar,
            blob,
            media_type: Compression::Zstd.media_type().to_string(),
        })
        .collect();
    c.format = Format::OciArchive;
    run(c);
}

/// Issue 6 item 8: hard links keep their group on every driver, whatever the file type
/// (a hard-linked symlink included).
#[test]
fn hard_linked_symlinks() {
    let t = Tree::new()
        .file("target.txt", b"target\n")
        .symlink("sl", "target.txt")
        .hard_link("hl", "sl")
        .file("f1", b"regular pair\n")
        .mode(0o600)
        .hard_link("f2", "f1")
        .fifo("p1")
        .hard_link("p2", "p1")
        .char_dev("c1", 1, 7)
        .hard_link("c2", "c1");
    run(Case::new(
        "hard-linked-symlinks",
        inputs::symlink_hard_links(),
        t,
    ));
}

/// Issue 6 item 9: an init directory the image deleted is the init layer's own
/// (0755 0:0), not the deleted lower one; one the image keeps keeps its attributes.
#[test]
fn deleted_init_dirs() {
    let t = Tree::new()
        .file("other", b"stays\n")
        .dir("dev")
        .dir("etc")
        .dir("proc")
        .mode(0o700)
        .owner(1000, 1000);
    let mut c = Case::new("deleted-init-dirs", inputs::deleted_init_dirs(), t);
    c.checked_init = &["dev", "etc", "proc"];
    run(c);
}

/// The suite's three-layer sample image (every entry kind, whiteouts, opaque dir, hard
/// links, xattrs, gzip and zstd layers) through the same comparison, as an OCI archive;
/// its expected tree is the fixture model's.
#[test]
fn sample_image_three_layers() {
    let img = sample_image("sample");
    let c = Case {
        name: "sample",
        layers: img.layer_blobs(),
        format: Format::OciArchive,
        expected: img.expected().expect("sample model"),
        checked_init: &[],
        extra: no_extra,
    };
    run(c);
}
