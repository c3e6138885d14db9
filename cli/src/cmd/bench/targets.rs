//! What is benchmarked: each driver of the registry through the layer store, and the
//! peers a user would pick instead (`--peers`). One function per kind runs one run of
//! its steps in a scratch directory of its own and removes it afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use layerstore::{CommitOptions, ImportOptions, ImportSource, LayerStore, LockMode};

use super::work::{self, remove_scratch};
use super::{Sink, Step};
use crate::config::Settings;
use crate::open::registry;

/// Something timed: a driver or a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A layerctl driver (`vfs`, `overlay2`, `aufs`), through `LayerStore`.
    Driver(&'static str),
    /// `tar -xf FILE -C DIR`: the floor for import.
    TarX,
    /// Kernel overlayfs mounted by hand over a `tar -x` of the input.
    KernelOverlay,
    /// fuse-overlayfs over a `tar -x` of the input.
    FuseOverlayfs,
    /// The `containers-storage` CLI (podman's and CRI-O's store) with this driver.
    ContainersStorage(&'static str),
}

impl Target {
    /// Display name (table, JSON, chart legend).
    pub fn name(&self) -> String {
        match self {
            Target::Driver(d) => (*d).to_owned(),
            Target::TarX => "tar -x".to_owned(),
            Target::KernelOverlay => "overlay by hand".to_owned(),
            Target::FuseOverlayfs => "fuse-overlayfs".to_owned(),
            Target::ContainersStorage(d) => format!("c/storage {d}"),
        }
    }

    /// "driver" or "peer".
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Driver(_) => "driver",
            _ => "peer",
        }
    }

    /// The steps this target has, in scenario order.
    pub fn steps(&self) -> &'static [Step] {
        use Step::*;
        match self {
            Target::Driver(_) => &Step::ALL,
            Target::TarX => &[Import],
            Target::KernelOverlay | Target::FuseOverlayfs => &[
                Mount,
                ColdRead,
                WarmRead,
                StatWalk,
                SmallWrites,
                CopyUp,
                Umount,
            ],
            Target::ContainersStorage(_) => &[Import, Create, Mount, Umount, Rm],
        }
    }

    /// The command a peer needs, when it is one.
    pub fn program(&self) -> Option<&'static str> {
        match self {
            Target::Driver(_) => None,
            Target::TarX => Some("tar"),
            Target::KernelOverlay => Some("tar"),
            Target::FuseOverlayfs => Some("fuse-overlayfs"),
            Target::ContainersStorage(_) => Some("containers-storage"),
        }
    }
}

/// What every run shares.
#[derive(Debug)]
pub struct RunCtx<'a> {
    pub cfg: &'a Settings,
    /// The input tar.
    pub input: &'a Path,
    /// The largest regular files of the input (relative path, size): copied up.
    pub large: &'a [(PathBuf, u64)],
    /// Files written by the small-writes step.
    pub small_writes: usize,
    /// False when the page cache cannot be dropped (cold read not measured).
    pub cold: bool,
    /// Where this run's scratch directories go.
    pub scratch: &'a Path,
    /// Run number (for unique names).
    pub run: usize,
}

/// Runs one run of `target`'s steps, recording each into `sink`.
pub fn run_one(t: &Target, ctx: &RunCtx<'_>, sink: &mut Sink) -> anyhow::Result<()> {
    let dir = ctx
        .scratch
        .join(format!("{}-{}", t.name().replace([' ', '/'], "_"), ctx.run));
    let res = match t {
        Target::Driver(d) => run_driver(d, ctx, sink, &dir),
        Target::TarX => {
            std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            sink.time(t, Step::Import, || tar_x(ctx.input, &dir))
        }
        Target::KernelOverlay | Target::FuseOverlayfs => run_overlay(t, ctx, sink, &dir),
        Target::ContainersStorage(d) => run_cs(t, d, ctx, sink, &dir),
    };
    remove_scratch(&dir);
    res
}

fn tar_x(input: &Path, dir: &Path) -> anyhow::Result<()> {
    let st = Command::new("tar")
        .arg("-xf")
        .arg(input)
        .arg("-C")
        .arg(dir)
        .status()
        .context("run tar -x")?;
    anyhow::ensure!(st.success(), "tar -xf {} failed: {st}", input.display());
    Ok(())
}

/// The steps after mount, on the container root `mnt`: the same for drivers and peers.
fn inside(t: &Target, ctx: &RunCtx<'_>, sink: &mut Sink, mnt: &Path) -> anyhow::Result<()> {
    if ctx.cold {
        work::drop_caches()?;
        sink.time(t, Step::ColdRead, || work::read_all(mnt))?;
    }
    sink.time(t, Step::WarmRead, || work::read_all(mnt))?;
    sink.time(t, Step::StatWalk, || work::stat_walk(mnt))?;
    sink.time(t, Step::SmallWrites, || {
        work::small_writes(mnt, ctx.small_writes)
    })?;
    sink.time(t, Step::CopyUp, || work::copy_up(mnt, ctx.large))?;
    Ok(())
}

fn run_driver(name: &str, ctx: &RunCtx<'_>, sink: &mut Sink, root: &Path) -> anyhow::Result<()> {
    let t = Target::Driver(registry().get(name)?.name);
    let driver = registry().open(name, root, &ctx.cfg.options_for(name))?;
    let store = LayerStore::open(root, driver, LockMode::Exclusive)?;
    const C: &str = "bench";
    let res = (|| -> anyhow::Result<()> {
        let rep = sink.time(&t, Step::Import, || {
            Ok(store.import(ImportSource::Path(ctx.input), &ImportOptions::default())?)
        })?;
        let img = rep
            .images
            .last()
            .cloned()
            .context("the input holds no image")?;
        sink.time(&t, Step::Create, || {
            Ok(store.create_container(C, img.as_str())?)
        })?;
        let mnt = sink.time(&t, Step::Mount, || Ok(store.mount_container(C)?))?;
        inside(&t, ctx, sink, &mnt)?;
        sink.time(&t, Step::Commit, || {
            Ok(store.commit(C, &CommitOptions::default())?)
        })?;
        sink.time(&t, Step::Umount, || Ok(store.unmount_container(C)?))?;
        sink.time(&t, Step::Rm, || {
            store.remove_container(C, false)?;
            for i in store.images()? {
                store.remove_image(i.id.as_str())?;
            }
            Ok(())
        })?;
        Ok(())
    })();
    if res.is_err() {
        if let Err(e) = store.remove_container(C, true) {
            tracing::debug!(error = %e, "bench: removing the container after a failure");
        }
    }
    res
}

/// Unmounts (lazily) on drop unless disarmed: a failed run leaves no mount behind.
struct MountGuard<'a>(Option<&'a Path>);

impl Drop for MountGuard<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.0 {
            if let Err(e) = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH) {
                tracing::warn!(mount = %m.display(), error = %e, "bench: unmount on failure");
            }
        }
    }
}

fn run_overlay(t: &Target, ctx: &RunCtx<'_>, sink: &mut Sink, dir: &Path) -> anyhow::Result<()> {
    let [lower, upper, workd, mnt] = ["lower", "upper", "work", "mnt"].map(|n| dir.join(n));
    for d in [&lower, &upper, &workd, &mnt] {
        std::fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
    }
    tar_x(ctx.input, &lower)?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        workd.display()
    );
    sink.time(t, Step::Mount, || match t {
        Target::KernelOverlay => {
            let c = std::ffi::CString::new(data.clone())?;
            rustix::mount::mount(
                "overlay",
                &mnt,
                "overlay",
                rustix::mount::MountFlags::empty(),
                c.as_c_str(),
            )
            .with_context(|| format!("mount overlay on {}", mnt.display()))
        }
        _ => {
            // fuse-overlayfs returns once the mount is ready (it daemonizes then).
            let out = Command::new("fuse-overlayfs")
                .arg("-o")
                .arg(&data)
                .arg(&mnt)
                .output()
                .context("run fuse-overlayfs")?;
            anyhow::ensure!(
                out.status.success(),
                "fuse-overlayfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(())
        }
    })?;
    let mut guard = MountGuard(Some(&mnt));
    inside(t, ctx, sink, &mnt)?;
    sink.time(t, Step::Umount, || {
        rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::empty())
            .with_context(|| format!("unmount {}", mnt.display()))
    })?;
    guard.0 = None;
    Ok(())
}

/// `containers-storage` with its own root and run root below `dir`.
fn cs(dir: &Path, driver: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new("containers-storage");
    if driver != "overlay" {
        // Debian's storage.conf sets `overlay.mountopt`, which the other drivers refuse.
        cmd.env("STORAGE_OPTS", "");
    }
    let out = cmd
        .arg(args[0])
        .arg("--graph")
        .arg(dir.join("root"))
        .arg("--run")
        .arg(dir.join("run"))
        .arg("--storage-driver")
        .arg(driver)
        .args(&args[1..])
        .output()
        .with_context(|| format!("run containers-storage {}", args[0]))?;
    anyhow::ensure!(
        out.status.success(),
        "containers-storage {} failed ({}): {} {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn run_cs(
    t: &Target,
    driver: &str,
    ctx: &RunCtx<'_>,
    sink: &mut Sink,
    dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let input = ctx.input.to_string_lossy().into_owned();
    let res = (|| -> anyhow::Result<()> {
        sink.time(t, Step::Import, || {
            cs(
                dir,
                driver,
                &["import-layer", "--id", "benchlayer", "-f", &input],
            )
        })?;
        sink.time(t, Step::Create, || {
            cs(
                dir,
                driver,
                &["create-image", "--id", "benchimage", "benchlayer"],
            )?;
            cs(
                dir,
                driver,
                &["create-container", "--id", "benchctr", "benchimage"],
            )
        })?;
        sink.time(t, Step::Mount, || cs(dir, driver, &["mount", "benchctr"]))?;
        sink.time(t, Step::Umount, || {
            cs(dir, driver, &["unmount", "benchctr"])
        })?;
        sink.time(t, Step::Rm, || {
            cs(dir, driver, &["delete-container", "benchctr"])?;
            cs(dir, driver, &["delete-image", "benchimage"])
        })?;
        Ok(())
    })();
    if let Err(e) = cs(dir, driver, &["wipe"]).and_then(|_| cs(dir, driver, &["shutdown", "-f"])) {
        tracing::debug!(error = %e, "bench: containers-storage wipe/shutdown");
    }
    res
}
