//! Does overlay2 work here? A real test mount decides, cached per boot in
//! `<home>/.probe-<boot_id>.json` (kernel and modules cannot change without a reboot).
//!
//! Checks: backing filesystem (not overlay itself), d_type support, an overlay with two
//! lowers + upper mounts, whether native diff is valid (no `redirect_dir`/`metacopy`:
//! a directory renamed in the merged view must not become a redirect in the upper), and
//! whether the new mount API takes `lowerdir+`.

use std::fs;
use std::path::{Path, PathBuf};

use driver_core::error::{DriverError, IoContext, Result};
use driver_core::fsutil::write_atomic;
use serde::{Deserialize, Serialize};

use crate::mounter::{self, MountApi};
use crate::plan::MountPlan;

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// overlay2 can be used here.
    pub supported: bool,
    /// Why not, when `supported` is false.
    pub reason: Option<String>,
    /// Name of the filesystem holding home (`ext4`, `xfs`...).
    pub backing_fs: String,
    /// readdir reports file types (overlay needs it).
    pub d_type: bool,
    /// diff/changes may read `diff/` directly.
    pub native_diff: bool,
    /// Why native diff is off, if it is.
    pub native_diff_reason: Option<String>,
    /// fsopen/fsconfig with `lowerdir+` works.
    pub new_mount_api: bool,
}

impl ProbeResult {
    /// The mount API to use by default.
    pub fn mount_api(&self) -> MountApi {
        if self.new_mount_api {
            MountApi::New
        } else {
            MountApi::Classic
        }
    }
}

fn not_supported(reason: impl Into<String>) -> DriverError {
    DriverError::NotSupported {
        driver: "overlay2".into(),
        reason: reason.into(),
    }
}

/// The registry's probe: `Ok` when overlay2 works under `home`, else `NotSupported`.
pub fn probe(home: &Path) -> Result<()> {
    let r = probe_cached(home)?;
    if r.supported {
        Ok(())
    } else {
        Err(not_supported(r.reason.unwrap_or_default()))
    }
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().replace(|c: char| !c.is_ascii_alphanumeric(), ""))
        .unwrap_or_else(|_| "unknown".into())
}

fn cache_path(home: &Path) -> PathBuf {
    home.join(format!(".probe-{}.json", boot_id()))
}

/// The probe result for this boot: read from the cache, or probed and cached.
pub fn probe_cached(home: &Path) -> Result<ProbeResult> {
    let cache = cache_path(home);
    if let Ok(text) = fs::read(&cache) {
        match serde_json::from_slice::<ProbeResult>(&text) {
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::warn!(path = %cache.display(), error = %e, "ignoring bad probe cache")
            }
        }
    }
    fs::create_dir_all(home).ctx("create directory", home)?;
    let r = run_probe(home)?;
    // Old boots' results are stale.
    if let Ok(rd) = fs::read_dir(home) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(".probe-") && n.ends_with(".json") && e.path() != cache {
                if let Err(err) = fs::remove_file(e.path()) {
                    tracing::debug!(error = %err, "removing stale probe cache");
                }
            }
        }
    }
    let json = serde_json::to_vec_pretty(&r)
        .map_err(|e| DriverError::io("encode probe result", &cache, e.into()))?;
    write_atomic(&cache, &json)?;
    tracing::debug!(?r, "overlay2 probe");
    Ok(r)
}

fn backing_fs(home: &Path) -> Result<String> {
    let st = nix::sys::statfs::statfs(home).ctx("statfs", home)?;
    #[allow(clippy::unnecessary_cast)]
    Ok(driver_core::fsutil::fs_magic_name(
        st.filesystem_type().0 as i64,
    ))
}

fn supports_d_type(dir: &Path) -> Result<bool> {
    let f = dir.join("f");
    fs::write(&f, b"").ctx("create", &f)?;
    let mut d = nix::dir::Dir::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .ctx("open directory", dir)?;
    for e in d.iter() {
        let e = e.ctx("readdir", dir)?;
        if e.file_name().to_bytes() == b"f" {
            return Ok(e.file_type().is_some());
        }
    }
    Ok(false)
}

/// Unmounts on drop, so a failed probe leaves no mount behind.
struct MountGuard(Option<PathBuf>);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            if let Err(e) = mounter::unmount("probe", &t) {
                tracing::warn!(target = %t.display(), error = %e, "probe unmount");
            }
        }
    }
}

fn param_on(name: &str) -> bool {
    fs::read_to_string(format!("/sys/module/overlay/parameters/{name}"))
        .map(|s| matches!(s.trim(), "Y" | "y" | "on" | "1"))
        .unwrap_or(false)
}

fn run_probe(home: &Path) -> Result<ProbeResult> {
    let backing = backing_fs(home)?;
    let mut r = ProbeResult {
        supported: false,
        reason: None,
        backing_fs: backing.clone(),
        d_type: false,
        native_diff: false,
        native_diff_reason: None,
        new_mount_api: false,
    };
    if matches!(backing.as_str(), "overlayfs" | "ecryptfs" | "fuse") {
        r.reason = Some(format!("{backing} cannot hold overlay upper layers"));
        return Ok(r);
    }
    // The pid lets startup repair of another process tell a live probe from debris.
    let tmp = home.join(format!(
        ".probe-tmp-{}-{}",
        std::process::id(),
        driver_core::id::random_hex(6)
    ));
    let result = probe_in(&tmp, &mut r);
    if let Err(e) = fs::remove_dir_all(&tmp) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %tmp.display(), error = %e, "removing probe dir");
        }
    }
    if let Err(e) = result {
        r.supported = false;
        r.reason = Some(e.to_string());
    }
    Ok(r)
}

fn probe_in(tmp: &Path, r: &mut ProbeResult) -> Result<()> {
    for d in ["l1/d", "l2", "upper", "work", "merged", "dt"] {
        fs::create_dir_all(tmp.join(d)).ctx("create directory", tmp.join(d))?;
    }
    r.d_type = supports_d_type(&tmp.join("dt"))?;
    if !r.d_type {
        r.reason = Some(format!("{} does not support d_type", r.backing_fs));
        return Ok(());
    }
    r.new_mount_api = match mounter::new_api_works(&tmp.join("l1")) {
        Ok(()) => true,
        Err(why) => {
            tracing::debug!(why, "new mount API unavailable, using mount(2)");
            false
        }
    };
    let plan = MountPlan {
        home: tmp.to_owned(),
        lowerdirs: vec!["l2".into(), "l1".into()],
        upperdir: Some("upper".into()),
        workdir: Some("work".into()),
        target: tmp.join("merged"),
        options: vec!["index=off".into()],
        flags: vec![],
        label: None,
        internal: Vec::new(),
    };
    mounter::mount(&plan, r.mount_api())?;
    let mut guard = MountGuard(Some(plan.target.clone()));
    // Docker's test: rename a lower dir in the merged view; with redirect_dir on, the
    // upper gets a redirect xattr that a plain walk of diff/ would misread.
    let redirect = match fs::rename(tmp.join("merged/d"), tmp.join("merged/d2")) {
        Ok(()) => rustix::fs::lgetxattr(
            tmp.join("upper/d2"),
            "trusted.overlay.redirect",
            &mut [0u8; 256],
        )
        .is_ok(),
        Err(_) => false, // EXDEV: redirect_dir off
    };
    if let Some(t) = guard.0.take() {
        mounter::unmount("probe", &t)?;
    }
    r.native_diff = !redirect && !param_on("metacopy");
    if !r.native_diff {
        r.native_diff_reason = Some(if redirect {
            "redirect_dir is enabled".into()
        } else {
            "metacopy is enabled".into()
        });
    }
    r.supported = true;
    Ok(())
}
