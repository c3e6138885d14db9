//! Breaking layerctl as a new user would (breaker 6): the config file, odd `--root`
//! paths, `check` against hand-made damage. Each test is the smallest reproduction of
//! one failure found by hand; the commit that adds it says what was wrong.

use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use layerctl_tests::fixtures::{Entry, Layer};
use layerctl_tests::harness::{self, drivers, Ctl};

/// A tiny image for the odd-root tests.
fn tiny_image(ctl: &Ctl) -> PathBuf {
    let tar = Layer::new(vec![
        Entry::dir("etc"),
        Entry::file("etc/hello", b"hi\n".to_vec()),
    ])
    .tar();
    ctl.write_work("img.tar", &tar)
}

/// The life cycle on a store whose root is `ctl.root`: import, create, mount at the
/// exact path `mount` prints (its stdout bytes), read the image's file, write one that
/// `diff` lists, `check` clean while mounted, umount, rm, `check` clean.
fn life_cycle(ctl: &Ctl) {
    let what = format!("[{}] root {:?}", ctl.driver, ctl.root);
    ctl.import(&tiny_image(ctl), "odd");
    ctl.ok(&["create", "c", "odd"]);
    let out = ctl.cmd().args(["mount", "c"]).output().unwrap();
    assert!(out.status.success(), "{what}: mount: {out:?}");
    let printed = out.stdout.strip_suffix(b"\n").expect("one line");
    let mnt = PathBuf::from(OsStr::from_bytes(printed));
    assert!(
        mnt.starts_with(&ctl.root),
        "{what}: mount printed {mnt:?}, not a path below the root"
    );
    assert_eq!(
        std::fs::read(mnt.join("etc/hello")).unwrap(),
        b"hi\n",
        "{what}: the image's file through the printed mount path"
    );
    std::fs::write(mnt.join("etc/new"), b"new\n").unwrap();
    let diff = ctl.ok(&["diff", "c"]);
    assert!(diff.lines().any(|l| l == "A /etc/new"), "{what}: {diff}");
    let r = ctl.run(&["check"]);
    assert_eq!(r.code, 0, "{what}: check while mounted: {r:?}");
    ctl.ok(&["umount", "c"]);
    ctl.assert_mounted(&mnt, false);
    ctl.ok(&["rm", "c"]);
    let r = ctl.run(&["check"]);
    assert_eq!(r.code, 0, "{what}: check after rm: {r:?}");
}

/// `ctl.root` set to `<base>/root-<leaf>`.
fn odd_root(ctl: &mut Ctl, leaf: &[u8]) {
    let mut name = b"root-".to_vec();
    name.extend_from_slice(leaf);
    ctl.root = ctl.base().join(std::ffi::OsString::from_vec(name));
}

/// A root with a backslash in its path (`/srv/a\b`) works on every driver. overlay2
/// refused it as "not supported" (`fsconfig upperdir=...: No such file or directory`):
/// overlayfs unescapes `upperdir` and `workdir` values (a backslash quotes the next
/// byte), and the driver passed them unescaped.
#[test]
fn a_root_with_a_backslash_works() {
    for spec in drivers("a_root_with_a_backslash_works") {
        let mut ctl = Ctl::new(spec.name);
        odd_root(&mut ctl, b"a\\b");
        life_cycle(&ctl);
    }
}

/// A root named with a non-UTF-8 byte works on every driver: overlay2 sent its dirs
/// through `to_string_lossy`, so U+FFFD named a missing dir (exit 6, "not supported");
/// `mount` printed U+FFFD for the byte, a path that does not exist.
#[test]
fn a_non_utf8_root_works() {
    for spec in drivers("a_non_utf8_root_works") {
        let mut ctl = Ctl::new(spec.name);
        odd_root(&mut ctl, b"caf\xe9");
        life_cycle(&ctl);
    }
}

/// Any mount on the host whose mount point is not UTF-8 (a user's `/mnt/caf\xe9`) made
/// `check` of every store fail with exit 1 ("read /proc/self/mountinfo: stream did not
/// contain valid UTF-8"), and the drivers' mount-table lookups with it.
#[test]
fn a_non_utf8_mount_elsewhere_does_not_break_check() {
    for spec in drivers("a_non_utf8_mount_elsewhere_does_not_break_check") {
        let ctl = Ctl::new(spec.name);
        ctl.import(&tiny_image(&ctl), "img");
        ctl.ok(&["create", "c", "img"]);
        let elsewhere = ctl
            .base()
            .join(std::ffi::OsString::from_vec(b"mnt-caf\xe9".to_vec()));
        std::fs::create_dir(&elsewhere).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&elsewhere)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs at {elsewhere:?}");
        let r = ctl.run(&["check"]);
        let mnt = ctl.mount("c");
        let r2 = ctl.run(&["check"]);
        ctl.ok(&["umount", "c"]);
        let st = std::process::Command::new("umount")
            .arg(&elsewhere)
            .status()
            .unwrap();
        assert!(st.success(), "umount {elsewhere:?}");
        assert_eq!(r.code, 0, "[{}] check: {r:?}", spec.name);
        assert_eq!(
            r2.code, 0,
            "[{}] check while {mnt:?} is mounted: {r2:?}",
            spec.name
        );
    }
}

/// `check` reads the images' `names` files: a line that is no valid name (`bad name`)
/// and one name on two images (`foo` on one, `foo:latest` on another: `create c foo`
/// picked one silently) were reported clean. Now both are problems (exit 8); `--repair`
/// drops the bad line and takes the claimed name from every claimant (exit 9), keeping
/// the images and their other names; the store is clean after.
#[test]
fn check_reports_and_repairs_bad_and_duplicate_image_names() {
    let ctl = Ctl::new("vfs");
    let a = ctl.import(&tiny_image(&ctl), "foo");
    let tar = Layer::new(vec![Entry::file("other", b"2\n".to_vec())]).tar();
    let b = ctl.import(&ctl.write_work("b.tar", &tar), "bar");
    let names = |id: &str| {
        ctl.root
            .join("images/sha256")
            .join(id.strip_prefix("sha256:").unwrap())
            .join("names")
    };
    std::fs::write(names(&a), "foo\nbad name\nkeep:1\n").unwrap();
    std::fs::write(names(&b), "bar\nfoo:latest\n").unwrap();
    let r = ctl.run(&["check"]);
    assert_eq!(r.code, 8, "{r:?}");
    assert!(
        r.stdout.contains("invalid name \"bad name\""),
        "names the bad line: {r:?}"
    );
    assert!(
        r.stdout.contains("foo:latest is claimed by 2 images") && r.stdout.contains(&b),
        "names the shared name and its images: {r:?}"
    );
    let r = ctl.run(&["check", "--repair"]);
    assert_eq!(r.code, 9, "{r:?}");
    assert_eq!(std::fs::read_to_string(names(&a)).unwrap(), "keep:1\n");
    assert_eq!(std::fs::read_to_string(names(&b)).unwrap(), "bar\n");
    ctl.fails(&["create", "c", "foo"], 3);
    assert_eq!(ctl.run(&["check"]).code, 0);
}

/// Names a user gives (`tag`, `import --name`, `commit --name`) follow Docker's
/// reference grammar: `FOO`, `foo:`, `:tag`, `foo::x`, `a/../b` were taken, and `save`
/// then wrote them into `RepoTags` / `io.containerd.image.name`, where `docker load`
/// refuses the whole archive (invalid reference format). Now exit 5 naming the rule,
/// and the image keeps only its valid names; digests, ports and 255-byte names work.
#[test]
fn new_image_names_follow_dockers_reference_grammar() {
    let ctl = Ctl::new("vfs");
    let img = tiny_image(&ctl);
    let id = ctl.import(&img, "foo");
    for bad in ["FOO", "foo:", ":tag", "foo::x", "a/../b"] {
        let r = ctl.fails(&["tag", "foo", bad], 5);
        assert!(r.stderr.contains("invalid image name"), "{bad}: {r:?}");
        ctl.fails(
            &[
                "import".as_ref(),
                img.as_os_str(),
                "--name".as_ref(),
                bad.as_ref(),
            ],
            5,
        );
    }
    let digest = format!("foo@sha256:{}", "a".repeat(64));
    let long = "a".repeat(255);
    for ok in ["localhost:5000/foo:v1", digest.as_str(), long.as_str()] {
        assert_eq!(ctl.ok(&["tag", "foo", ok]).trim(), id, "{ok}");
    }
    let images = ctl.json(&["images"]);
    let names = images[0]["names"].as_array().unwrap();
    assert_eq!(names.len(), 4, "foo and the three valid names: {images}");
    assert_eq!(ctl.run(&["check"]).code, 0);
}

/// `run` (in-process libcontainer) of a command that exists but cannot be executed (a
/// binary for another architecture: `exec format error`) exited 255 and printed
/// nothing: the `execvp` fails after the start handshake, in the container's init,
/// which only logged it (logging is off without `-v`). Now one line on stderr naming
/// the command and the error, and exit 126 (Docker's "cannot invoke"); `--rm` leaves
/// no container.
#[test]
fn run_of_a_command_that_cannot_exec_says_why() {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(!harness::privileged_required(), "run needs root");
        eprintln!("SKIP run_of_a_command_that_cannot_exec_says_why: needs root");
        return;
    }
    let ctl = Ctl::new("vfs");
    let tar = Layer::new(vec![
        Entry::dir("bin"),
        // As in an image for another architecture, /bin/sh too (glibc's execvp runs a
        // file the kernel refuses with ENOEXEC through /bin/sh).
        Entry::file("bin/sh", b"\x7fELF garbage".to_vec()).mode(0o755),
        Entry::file("bin/bad", b"\x7fELF garbage".to_vec()).mode(0o755),
    ])
    .tar();
    ctl.import(&ctl.write_work("bad.tar", &tar), "badarch");
    let r = ctl.run(&["run", "--rm", "badarch", "--", "/bin/bad"]);
    assert_eq!(r.code, 126, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "one line: {r:?}");
    assert!(
        r.stderr.contains("exec /bin/bad") && r.stderr.contains("Exec format error"),
        "{r:?}"
    );
    assert_eq!(ctl.json(&["ps"]), serde_json::json!([]));
    assert_eq!(ctl.run(&["check"]).code, 0);
}

/// `--root` that is a symlink to nothing (a data disk not mounted yet) failed with
/// exit 1 and "create root R: File exists"; now it is the configuration error it is
/// (exit 7), naming the missing target, and nothing is created there.
#[test]
fn a_dangling_symlink_root_is_a_config_error() {
    let mut ctl = Ctl::new("vfs");
    let target = ctl.base().join("not-mounted-yet");
    ctl.root = ctl.base().join("root-link");
    std::os::unix::fs::symlink(&target, &ctl.root).unwrap();
    let r = ctl.fails(&["images"], 7);
    assert!(
        r.stderr.contains("is a symlink to") && r.stderr.contains("not-mounted-yet"),
        "{r:?}"
    );
    assert!(!target.exists(), "nothing made at the target");
}

/// `check --repair` with `--driver` on a root that does not exist yet failed with exit 1
/// ("resolve root R: No such file or directory") where `check`, and `check --repair`
/// without `--driver`, made the root and said clean; now all three agree (exit 0).
#[test]
fn repair_of_a_new_root_with_a_driver_is_clean() {
    for spec in drivers("repair_of_a_new_root_with_a_driver_is_clean") {
        let ctl = Ctl::new(spec.name);
        assert!(!ctl.root.exists());
        let r = ctl.run(&["check", "--repair"]);
        assert_eq!(r.code, 0, "[{}] {r:?}", spec.name);
        assert_eq!(ctl.run(&["check"]).code, 0);
    }
}

/// The last number of `gc`'s last line (`Would reclaim: N bytes`, `Total reclaimed
/// space: N bytes`).
fn gc_bytes(out: &str) -> u64 {
    let last = out.lines().last().unwrap_or_default();
    last.split_whitespace()
        .rev()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {out:?}"))
}

/// `gc --dry-run` says what `gc` then frees, on every driver. It summed only each
/// layer's content directory (`Driver::layer_dir`), so overlay2's `link`, `lower`,
/// `work/`, `merged/` and `l/` link and aufs's `layers/` and `mnt/` entries were left
/// out: "Would reclaim: 445548 bytes", then "Total reclaimed space: 482796 bytes".
/// The unused layer is an image's whose record is gone (an import killed before it
/// published the image), the orphans a container's whose record is gone.
#[test]
fn gc_dry_run_says_what_gc_frees() {
    for spec in drivers("gc_dry_run_says_what_gc_frees") {
        let ctl = Ctl::new(spec.name);
        ctl.import(&tiny_image(&ctl), "kept");
        let big = Layer::new(vec![
            Entry::dir("data"),
            Entry::file("data/blob", vec![7u8; 300_000]),
        ])
        .tar();
        let id = ctl.import(&ctl.write_work("big.tar", &big), "big");
        ctl.ok(&["create", "c", "big"]);
        let mnt = ctl.mount("c");
        std::fs::write(mnt.join("rw"), vec![1u8; 100_000]).unwrap();
        ctl.ok(&["umount", "c"]);
        let hex = id.strip_prefix("sha256:").unwrap();
        std::fs::remove_dir_all(ctl.root.join("images/sha256").join(hex)).unwrap();
        std::fs::remove_dir_all(ctl.root.join("containers/c")).unwrap();
        let dry = gc_bytes(&ctl.ok(&["gc", "--dry-run"]));
        let done = gc_bytes(&ctl.ok(&["gc"]));
        assert!(done > 400_000, "[{}] gc freed {done}", spec.name);
        assert_eq!(dry, done, "[{}] gc --dry-run vs gc", spec.name);
        assert_eq!(ctl.run(&["check"]).code, 0);
    }
}

/// `save` of an image named by digest (`foo@sha256:..`, which `tag` takes) wrote that
/// name into manifest.json `RepoTags`, where `docker load` refuses the whole archive
/// ("invalid tag": RepoTags are NAME:TAG), and the digest's hex into `repositories`
/// and `org.opencontainers.image.ref.name` as if it were a tag. Now the digest name is
/// in index.json by its full name only (as containerd names it); the tagged names of
/// the same image are unchanged.
#[test]
fn save_keeps_digest_names_out_of_repo_tags() {
    let ctl = Ctl::new("vfs");
    ctl.import(&tiny_image(&ctl), "foo:1");
    let digest_name = format!("foo@sha256:{}", "a".repeat(64));
    ctl.ok(&["tag", "foo:1", &digest_name]);
    let out = ctl.work.join("out.tar");
    ctl.ok(&[
        "save".as_ref(),
        "foo:1".as_ref(),
        digest_name.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    let mut ar = tar::Archive::new(std::fs::File::open(&out).unwrap());
    let mut files = std::collections::BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut s = String::new();
        if matches!(p.as_str(), "index.json" | "manifest.json" | "repositories") {
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            files.insert(p, s);
        }
    }
    let manifest: serde_json::Value = serde_json::from_str(&files["manifest.json"]).unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["foo:1"]),
        "{manifest}"
    );
    assert!(
        !files["repositories"].contains(&"a".repeat(64)),
        "{files:?}"
    );
    let index: serde_json::Value = serde_json::from_str(&files["index.json"]).unwrap();
    let anns: Vec<&serde_json::Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["annotations"])
        .collect();
    assert_eq!(anns.len(), 2, "{index}");
    let full = format!("docker.io/library/{digest_name}");
    let d = anns
        .iter()
        .find(|a| a["io.containerd.image.name"] == full.as_str())
        .unwrap_or_else(|| panic!("the digest name in index.json: {index}"));
    assert!(
        d.get("org.opencontainers.image.ref.name").is_none(),
        "no tag for a digest name: {index}"
    );
    assert!(anns
        .iter()
        .any(|a| a["org.opencontainers.image.ref.name"] == "1"));
}

/// `rm` of a container whose read-write layer is gone (`check`: "read-write layer ..
/// is missing") failed with exit 3 "layer .. does not exist" on overlay2 (asking the
/// mount count of the missing layer), so only `check --repair` could remove it. Now
/// `rm` removes it; what is left is the layer's dangling short link, which `check
/// --repair` fixes.
#[test]
fn rm_removes_a_container_whose_rw_layer_is_gone() {
    if !harness::can_run("rm_removes_a_container_whose_rw_layer_is_gone", "overlay2") {
        return;
    }
    let ctl = Ctl::new("overlay2");
    ctl.import(&tiny_image(&ctl), "img");
    ctl.ok(&["create", "c", "img"]);
    let mid = std::fs::read_to_string(ctl.root.join("containers/c/mount-id")).unwrap();
    std::fs::remove_dir_all(ctl.root.join("overlay2").join(mid.trim())).unwrap();
    assert_eq!(ctl.run(&["check"]).code, 8);
    assert_eq!(ctl.ok(&["rm", "c"]).trim(), "c");
    assert_eq!(ctl.json(&["ps"]), serde_json::json!([]));
    ctl.repair();
    assert_eq!(ctl.run(&["check"]).code, 0);
}

/// A root whose `driver` file is empty (truncated by a crash or a full disk) but holds
/// a vfs image: the next command picked the best driver (overlay2), rewrote `driver`,
/// and every layer's content was "missing" (`check` exit 8; `check --repair` would
/// remove every image). Now commands refuse it naming the driver directories there
/// (exit 6) and leave the file alone; `--driver vfs` opens it and records vfs again.
#[test]
fn a_root_that_lost_its_driver_file_is_not_adopted() {
    let ctl = Ctl::new("vfs");
    ctl.import(&tiny_image(&ctl), "img");
    std::fs::write(ctl.root.join("driver"), "").unwrap();
    let bare = || {
        let mut c = std::process::Command::new(&ctl.bin);
        c.arg("--root").arg(&ctl.root);
        c.env("LAYERCTL_CONFIG", ctl.work.join("empty-config.toml"));
        c
    };
    for args in [&["images"][..], &["check", "--repair"]] {
        let out = bare().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{args:?}: {err}");
        assert!(
            err.contains("records no driver") && err.contains("vfs"),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(ctl.root.join("driver")).unwrap(),
        ""
    );
    let images = ctl.json(&["images"]); // ctl passes --driver vfs
    assert_eq!(images.as_array().unwrap().len(), 1, "{images}");
    assert_eq!(
        std::fs::read_to_string(ctl.root.join("driver"))
            .unwrap()
            .trim(),
        "vfs"
    );
    assert_eq!(ctl.run(&["check"]).code, 0);
}
