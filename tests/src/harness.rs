//! Running the real `layerctl` binary against a private root, with a guard that leaves
//! no mount behind (even when a test panics).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result};

/// File name of this package's build of the `layerctl` program (src/bin/layerctl-e2e.rs).
pub const BIN_NAME: &str = "layerctl-e2e";

/// Locates the `layerctl` program the tests run: `$LAYERCTL_BIN`, else this package's
/// own binary [`BIN_NAME`] in the cargo profile directory that holds this test
/// executable (`target/<profile>/deps/<test>` -> `target/<profile>/layerctl-e2e`).
///
/// Why a binary of this package and not the `layerctl` package's `target/debug/layerctl`:
/// cargo builds a package's binaries before it runs that package's integration tests and
/// benches (`CARGO_BIN_EXE_<name>`), with its own freshness tracking, so `cargo test -p
/// layerctl-tests` (or `--test one`) always runs a binary of the current sources. Another
/// package's binary is not built for these tests: it was stale whenever only this
/// package was tested. Checking its age against the sources would be a guess (mtimes,
/// which files count) and building it from the harness would run cargo inside cargo.
pub fn layerctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LAYERCTL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let cand = d.join(BIN_NAME);
        if cand.is_file() {
            return cand;
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    panic!(
        "{BIN_NAME} not found next to {} (and $LAYERCTL_BIN unset): cargo builds it for \
         this package's tests and benches; run them with `cargo test -p layerctl-tests`",
        exe.display()
    );
}

/// Whether `filesystem` (e.g. "overlay") is known to this kernel.
fn has_fs(filesystem: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some(filesystem))
        })
        .unwrap_or(false)
}

/// Whether `LAYERCTL_REQUIRE_PRIVILEGED=1` (missing privileges then fail instead of skip).
pub fn privileged_required() -> bool {
    std::env::var("LAYERCTL_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
}

/// How a file deleted through a container mount shows in the container's read-write
/// layer directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RwDeletion {
    /// A 0/0 character device at the deleted path (overlayfs).
    CharDev00,
    /// An OCI/AUFS `.wh.<name>` file next to it.
    WhFile,
    /// The path is simply gone (the rw layer is a full copy: vfs).
    Absent,
}

/// One storage driver the end-to-end tests run with. Every driver-dependent test iterates
/// [`DRIVERS`] (through [`drivers`]), so adding a driver (e.g. `aufs`) is one row there.
#[derive(Debug)]
pub struct DriverSpec {
    /// The `--driver` name.
    pub name: &'static str,
    /// Whether the driver needs root (it mounts, or stores owners and device nodes).
    pub needs_root: bool,
    /// The kernel filesystem it needs (a name from /proc/filesystems), if any.
    pub kernel_fs: Option<&'static str>,
    /// The fstype a container mount has in /proc/self/mountinfo; `None` when the
    /// driver does not mount (the container root is a plain directory).
    pub mount_fstype: Option<&'static str>,
    /// Where a layer's content lives below `--root`; `{id}` stands for the cache id.
    pub layer_dir: &'static str,
    /// How a deletion through the mount shows in the rw layer dir (same `{id}`
    /// pattern as `layer_dir`, with the container's mount id).
    pub rw_deletion: RwDeletion,
    /// Whether each layer is a full copy of its parent, so an image of n layers costs
    /// O(n^2) file copies (tests of very deep images skip such drivers).
    pub copies_layers: bool,
}

impl DriverSpec {
    /// Whether a container of this driver is a kernel mount.
    pub fn mounts(&self) -> bool {
        self.mount_fstype.is_some()
    }

    /// What this machine lacks to run the driver (empty: it can run).
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if self.needs_root && !nix::unistd::geteuid().is_root() {
            missing.push("root".to_string());
        }
        if let Some(fs) = self.kernel_fs {
            if !has_fs(fs) {
                missing.push(format!("{fs} in /proc/filesystems"));
            }
        }
        missing
    }

    /// The directory of layer `cache_id` below `root`.
    pub fn layer_dir(&self, root: &Path, cache_id: &str) -> PathBuf {
        root.join(self.layer_dir.replace("{id}", cache_id))
    }
}

/// Every driver the end-to-end tests know, in the order they run.
pub const DRIVERS: &[DriverSpec] = &[
    DriverSpec {
        name: "vfs",
        needs_root: true,
        kernel_fs: None,
        mount_fstype: None,
        layer_dir: "vfs/dir/{id}",
        rw_deletion: RwDeletion::Absent,
        copies_layers: true,
    },
    DriverSpec {
        name: "overlay2",
        needs_root: true,
        kernel_fs: Some("overlay"),
        mount_fstype: Some("overlay"),
        layer_dir: "overlay2/{id}/diff",
        rw_deletion: RwDeletion::CharDev00,
        copies_layers: false,
    },
    DriverSpec {
        // Userspace aufs over FUSE on kernels without aufs (this one); kernel aufs
        // where /proc/filesystems lists it. Either way a container is a mount.
        name: "aufs",
        needs_root: true,
        kernel_fs: Some("fuse"),
        mount_fstype: Some("fuse"),
        layer_dir: "aufs/diff/{id}",
        rw_deletion: RwDeletion::WhFile,
        copies_layers: false,
    },
];

/// The row of [`DRIVERS`] named `name`; panics for a driver the table lacks.
pub fn driver_spec(name: &str) -> &'static DriverSpec {
    DRIVERS
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("driver {name} is not in harness::DRIVERS"))
}

/// Returns true when the test may run with `driver`; false (after a message) to skip.
/// Panics instead of skipping when privileged tests are required.
pub fn can_run(test: &str, driver: &str) -> bool {
    let missing = driver_spec(driver).missing();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test} [{driver}]: needs {}", missing.join(" and "));
    if privileged_required() {
        panic!("{msg} (LAYERCTL_REQUIRE_PRIVILEGED=1)");
    }
    eprintln!("SKIP {msg}");
    false
}

/// The drivers of [`DRIVERS`] a test runs with: each one that can run here (the
/// others are skipped with a message, or fail the test under
/// `LAYERCTL_REQUIRE_PRIVILEGED=1`).
pub fn drivers(test: &str) -> Vec<&'static DriverSpec> {
    DRIVERS.iter().filter(|d| can_run(test, d.name)).collect()
}

/// Result of one layerctl run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A private store: a temp dir with `root/` inside, one driver, and a guard that
/// unmounts everything below the temp dir when dropped.
#[derive(Debug)]
pub struct Ctl {
    pub bin: PathBuf,
    pub driver: String,
    /// The row of [`DRIVERS`] for `driver`.
    pub spec: &'static DriverSpec,
    pub root: PathBuf,
    /// Scratch space for fixtures, next to the root (never inside it).
    pub work: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

impl Ctl {
    /// A fresh store for `driver` in a new temp dir (under $TMPDIR; /var/tmp when
    /// $TMPDIR is unset, so overlay's upper dir is on a real filesystem, not tmpfs).
    pub fn new(driver: &str) -> Self {
        let base = std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let tmp = tempfile::Builder::new()
            .prefix("layerctl-e2e-")
            .tempdir_in(base)
            .expect("temp dir");
        let root = tmp.path().join("root");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).expect("work dir");
        Ctl {
            bin: layerctl_bin(),
            driver: driver.to_string(),
            spec: driver_spec(driver),
            root,
            work,
            tmp: Some(tmp),
        }
    }

    /// A command with `--root` and `--driver` set; no config file from the host.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(&self.root)
            .arg("--driver")
            .arg(&self.driver);
        // An absent explicit config would be an error; point at an empty one instead so
        // the host's /etc/layerctl/config.toml never leaks into tests.
        let empty = self.work.join("empty-config.toml");
        if !empty.exists() {
            std::fs::write(&empty, "").expect("write empty config");
        }
        c.env("LAYERCTL_CONFIG", &empty);
        c.env_remove("RUST_LOG");
        c
    }

    /// Makes every later command read `text` as its config.toml (instead of an empty
    /// one), e.g. `[store]\nsync = "none"\n`.
    pub fn set_config(&self, text: &str) {
        std::fs::write(self.work.join("empty-config.toml"), text).expect("write config");
    }

    /// Runs `layerctl --root R --driver D ARGS...`.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        let out = self.cmd().args(args).output().expect("spawn layerctl");
        out.into()
    }

    /// Runs and requires exit 0; returns stdout.
    pub fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code,
            0,
            "layerctl {:?} failed (exit {}):\nstdout: {}\nstderr: {}",
            show_args(args),
            r.code,
            r.stdout,
            r.stderr
        );
        r.stdout
    }

    /// Runs and requires exit `code`; returns the run for message checks.
    pub fn fails<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], code: i32) -> Run {
        let r = self.run(args);
        assert_eq!(
            r.code,
            code,
            "layerctl {:?}: expected exit {code}, got {}:\nstdout: {}\nstderr: {}",
            show_args(args),
            r.code,
            r.stdout,
            r.stderr
        );
        assert!(
            r.stderr.contains("layerctl: "),
            "error must be reported as `layerctl: <message>` on stderr, got: {}",
            r.stderr
        );
        r
    }

    /// `--json` output parsed.
    pub fn json<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> serde_json::Value {
        let mut full: Vec<std::ffi::OsString> = vec!["--json".into()];
        full.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        let out = self.ok(&full);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {full:?}: {e}\n{out}"))
    }

    /// Runs `check --repair` and requires a consistent store afterwards: exit 0 (nothing
    /// to repair) or 9 (problems found and all repaired, listed on stdout).
    pub fn repair(&self) -> Run {
        let r = self.run(&["check", "--repair"]);
        assert!(
            r.code == 0 || r.code == 9,
            "check --repair must leave a consistent store (exit 0 or 9): {r:?}"
        );
        r
    }

    /// Imports a file; returns the image id (`sha256:<hex>`, the last stdout line).
    pub fn import(&self, file: &Path, name: &str) -> String {
        let out = self.ok(&[
            "import".as_ref(),
            file.as_os_str(),
            "--name".as_ref(),
            name.as_ref(),
        ]);
        let id = out.lines().last().unwrap_or("").trim().to_string();
        assert!(
            is_digest(&id),
            "import must print the image id `sha256:<64 hex>` as its last line, got {out:?}"
        );
        id
    }

    /// Mounts a container; returns the mount path (one line on stdout).
    pub fn mount(&self, container: &str) -> PathBuf {
        let out = self.ok(&["mount", container]);
        let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "mount prints one line, got {out:?}");
        PathBuf::from(lines[0].trim())
    }

    /// Writes `bytes` into the scratch dir; returns its path.
    pub fn write_work(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.work.join(name);
        std::fs::write(&p, bytes).expect("write fixture");
        p
    }

    /// The temp dir holding root and scratch.
    pub fn base(&self) -> &Path {
        self.tmp.as_ref().expect("live").path()
    }

    /// The layer dirs of the image's layers as the driver stores them
    /// (`vfs/dir/<cache-id>` or `overlay2/<cache-id>/diff`), bottom to top.
    pub fn image_layer_dirs(&self, image: &str) -> Vec<PathBuf> {
        let layers = self.json(&["layers", image]);
        layers
            .as_array()
            .expect("layers --json is an array")
            .iter()
            .map(|l| {
                let cache = l["cache_id"].as_str().expect("cache_id string");
                self.layer_dir(cache)
            })
            .collect()
    }

    /// Where the driver keeps the content of layer `cache_id` ([`DriverSpec::layer_dir`]).
    pub fn layer_dir(&self, cache_id: &str) -> PathBuf {
        self.spec.layer_dir(&self.root, cache_id)
    }

    /// Asserts that `mnt` is (or, with `mounted == false`, no longer is) a kernel mount
    /// of the driver's fstype; a no-op for drivers that do not mount.
    pub fn assert_mounted(&self, mnt: &Path, mounted: bool) {
        if let Some(fs) = self.spec.mount_fstype {
            let want = mounted.then_some(fs);
            assert_eq!(
                mount_fstype(mnt).as_deref(),
                want,
                "[{}] fstype of the mount at {} in /proc/self/mountinfo",
                self.driver,
                mnt.display()
            );
        }
    }

    /// Unmounts everything layerctl mounted under this store: `layerctl umount` for
    /// each container until its count is 0, then `umount -l` on any mount left below
    /// the temp dir (deepest first). Returns what it had to force.
    pub fn cleanup_mounts(&self) -> Vec<String> {
        let mut forced = Vec::new();
        if self.root.join("containers").is_dir() {
            if let Ok(rd) = std::fs::read_dir(self.root.join("containers")) {
                for ent in rd.flatten() {
                    let name = ent.file_name().to_string_lossy().into_owned();
                    for _ in 0..64 {
                        let r = self.run(&["umount", name.as_str()]);
                        if r.code != 0 || mounts_under(self.base()).is_empty() {
                            break;
                        }
                    }
                }
            }
        }
        for m in mounts_under(self.base()).into_iter().rev() {
            let st = Command::new("umount").arg("-l").arg(&m).status();
            forced.push(format!("{} ({:?})", m.display(), st.map(|s| s.code())));
        }
        forced
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let forced = self.cleanup_mounts();
        if !forced.is_empty() {
            eprintln!("cleanup: lazily unmounted {forced:?}");
        }
        if !mounts_under(self.base()).is_empty() {
            // Never remove a tree that still has mounts in it: keep the temp dir.
            eprintln!(
                "cleanup: mounts remain under {}; keeping it",
                self.base().display()
            );
            if let Some(t) = self.tmp.take() {
                let _ = t.keep();
            }
        }
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The arguments of a layerctl call, for assertion messages.
fn show_args<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Vec<String> {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

/// Mount points listed in /proc/self/mountinfo at or below `dir`, in table order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    driver_core::mountinfo::read()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// The fstype of the topmost mount at exactly `path`, if any.
pub fn mount_fstype(path: &Path) -> Option<String> {
    driver_core::mountinfo::mount_at(path)
        .ok()?
        .map(|m| m.fstype)
}

/// Paths an init layer adds (cli-contract.md) and the directories holding them.
pub const INIT_PATHS: &[&str] = &[
    "dev",
    "dev/pts",
    "dev/shm",
    "dev/console",
    "proc",
    "sys",
    "etc",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    "etc/mtab",
];

/// Whether `p` is an init-layer path.
pub fn is_init_path(p: &str) -> bool {
    INIT_PATHS.contains(&p)
}

/// Checks the init-layer files of a mounted container named `name`.
pub fn check_init_layer(mnt: &Path, name: &str) -> Result<()> {
    for d in ["dev/pts", "dev/shm", "proc", "sys"] {
        anyhow::ensure!(mnt.join(d).is_dir(), "init layer: {d} is not a directory");
    }
    let hostname =
        std::fs::read_to_string(mnt.join("etc/hostname")).context("read etc/hostname")?;
    anyhow::ensure!(
        hostname == format!("{name}\n"),
        "etc/hostname is {hostname:?}"
    );
    let hosts = std::fs::read_to_string(mnt.join("etc/hosts")).context("read etc/hosts")?;
    anyhow::ensure!(
        hosts.contains("127.0.0.1") && hosts.contains("localhost") && hosts.contains(name),
        "etc/hosts lacks localhost or {name}: {hosts:?}"
    );
    anyhow::ensure!(
        mnt.join("etc/resolv.conf").is_file(),
        "etc/resolv.conf missing"
    );
    anyhow::ensure!(mnt.join("dev/console").exists(), "dev/console missing");
    let mtab = std::fs::read_link(mnt.join("etc/mtab")).context("readlink etc/mtab")?;
    anyhow::ensure!(
        mtab == Path::new("/proc/mounts"),
        "etc/mtab -> {}",
        mtab.display()
    );
    Ok(())
}
