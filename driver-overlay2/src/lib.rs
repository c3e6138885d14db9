//! # driver-overlay2: the overlay2 storage driver of layerctl
//!
//! Layers are stacked with the kernel's overlayfs, as in Docker's overlay2 driver.
//! Mounts use the new mount API (fsopen/fsconfig with one `lowerdir+` per layer,
//! Linux >= 6.8), so one overlay takes the kernel's 500 lower layers; deeper stacks
//! mount their lower part as shared internal overlays (see "Deep stacks"), up to
//! 124,751 layers. Older kernels fall back to mount(2), whose options must fit one page
//! (~130 layers with short links).
//!
//! ## On-disk layout (`<home>` is `<root>/overlay2`)
//! ```text
//! <home>/
//!   l/<SHORT> -> ../<id>/diff       26-char short links keep mount options short
//!   <id>/diff/                      the layer's own content (overlay whiteouts:
//!                                   0/0 char devices, trusted.overlay.opaque=y)
//!   <id>/link                       the layer's short link name
//!   <id>/lower                      l/A:l/B:...  ancestors' short links, nearest first
//!                                   (absent for a layer without parent)
//!   <id>/work/                      overlay workdir; only read-write layers have one,
//!                                   and its presence is what marks a layer read-write
//!   <id>/merged/                    mount point
//!   <id>/lower-merged/              mount point of the internal mount keyed by <id>, a
//!                                   read-only overlay of the group of layers that <id>
//!                                   tops (only for layers that top a group, see below)
//!   <id>/lower-wh/                  that group's whiteout summary (built on first use)
//!   <id>/.lower-wh.tmp-<pid>-<r>/   a summary being built
//!   .<id>-removing/                 a layer being removed (finished by cleanup)
//!   .creating-<pid>-<id>/           a layer being created (renamed to <id> when complete)
//!   refs/<id>, refs/.lock           mount reference counts (driver_core::refcount)
//!   refs/<id>.lower                 count of the internal mount keyed by <id>
//!   .probe-<boot id>.json           probe result, cached per boot
//!   .probe-tmp-<pid>-<rand>/        a probe's test mount (removed once its pid is gone)
//! ```
//!
//! ## Mounting
//! - Read-write layer (container, init): `lowerdir` = ancestors, `upperdir` = own diff.
//! - Read-only layer with ancestors (a view of an image): `lowerdir` = own diff +
//!   ancestors, no upper.
//! - Layer without parent: no overlay at all, `mount` returns `diff/` (like Docker);
//!   the reference count is still kept.
//!
//! ## Options (`[driver_options.overlay2]` in config.toml)
//! - `mountopt`: extra comma-separated options for every mount (`volatile`, `nodev`...;
//!   VFS flags become mount attributes, `volatile` is dropped for read-only views).
//! - `index`: overlay's inode index, `on`/`off` (default `off`, like Docker).
//! - `mount_api`: `auto` (default: the new API when the probe found it), `new`, `classic`.
//!
//! Unknown keys are an `InvalidOption` error.
//!
//! ## Deep stacks
//! One overlay takes at most [`MAX_LOWER_LAYERS`] (500, the kernel's `OVL_MAX_STACK`)
//! lower layers, so a 500-layer image with a container's init layer (501 lowers) could
//! not mount on one. Up to 500 lowers mount directly, exactly as before. Deeper stacks
//! are cut from the BOTTOM into groups of [`CHUNK_LAYERS`] (499) layers; each group is
//! mounted once, read-only (lowerdir only, `index=off`), at `<top>/lower-merged`, where
//! `<top>` is the group's top layer, and the outer mount uses it as one lower dir:
//! ```text
//! outer lowers: [rest of the layers, directly] [group k] [wh k] ... [group 1] [wh 1] [group 0]
//! ```
//! - Groups are fixed by position from the base layer, so a layer belongs to the same
//!   group in every stack: containers of one image, read-only views of it and images
//!   with the same base share the internal mounts. Each is counted in
//!   `refs/<top>.lower` (one reference per outer mount using it), taken before the
//!   outer mount, given back after its unmount or when anything in between fails.
//! - An overlay hides its layers' whiteouts and opaque markers from an overlay stacked
//!   on it, so a group's deletions would not reach the groups below. Each group but the
//!   bottom one has a whiteout summary `<top>/lower-wh` (0/0 char devices and
//!   `trusted.overlay.opaque=y` directories for what the group deletes), placed right
//!   below the group's mount; it hides exactly that from the groups below. It is also
//!   the group's own bottom lower dir (499 layers + 1 = the kernel's 500): overlayfs
//!   passes a directory only one layer of the group has through unmerged, and would
//!   list that layer's whiteouts (meant for the groups below) in `readdir` while `stat`
//!   denies them; over the summary every such directory is merged and filtered.
//! - One level only: the kernel nests overlays at most two deep
//!   (`FILESYSTEM_MAX_STACK_DEPTH` = 2). With the summaries, at most 250 groups fit in
//!   one outer mount: [`MAX_STACK_LAYERS`] = 124,751 lowers. When the top group would
//!   leave more than the outer mount takes, the top layers form one more (smaller)
//!   group keyed by the topmost lower.
//! - `cleanup` (and `repair(true)`) unmount internal mounts that no overlay in
//!   `/proc/self/mountinfo` names as a lower dir any more (an outer mount unmounted
//!   behind the driver's back); `remove` of a layer whose internal mount is in use is
//!   `Busy`. They find candidates from the counts in `refs/` (an internal mount is
//!   counted before it is mounted) and statx, and read the table only to confirm one
//!   that no counted outer mount uses ([`internal`]), so a store open costs no table
//!   read.
//!
//! ## Depth errors
//! `create` refuses a layer whose mount could not be made (`TooDeep`, before anything is
//! created), naming the image's own layer count and limit (read-write layers, such as a
//! container's init layer, are not counted). With classic mount(2) every option string
//! (the outer mount's and each internal mount's) must fit one page; `create` checks that
//! too when the classic API is in use, so classic mounts stay at ~130 layers.
//!
//! ## Diff
//! When the probe found native diff valid (no redirect_dir/metacopy) and `parent` is the
//! layer's direct parent, `diff`/`changes`/`diff_size` walk `diff/` over the layer's
//! stack (O(changes)); otherwise they fall back to driver_core's naive mount-and-compare.
//! Both go through driver_core's one exporter, so the tar is the same bytes either way
//! (and the same as vfs gives for the same changes).
//!
//! ## Locking rules
//! - create/remove/apply_diff are serialised by the caller (the layer store's lock).
//! - mount/unmount take the exclusive flock `refs/.lock` across the mount syscalls
//!   (internal mounts included), so concurrent processes mount once and count right.
//!   Whether a count is live is one `driver_core::refcount::Liveness` per layer: the
//!   kernel's mount table (`/proc/self/mountinfo`) for overlays and internal mounts, the
//!   boot id for base layers (never mounted), so counts survive restarts and reboots
//!   reset them.
//! - Startup repairs (missing short links, leftovers of removal) tolerate a concurrent
//!   process doing the same: every step accepts "already done".

mod changes;
mod create;
mod diff;
pub mod internal;
pub mod layout;
mod list;
mod mount;
pub mod mounter;
mod naive;
pub mod options;
pub mod plan;
pub mod probe;
mod remove;
mod startup;

use std::io::Read;
use std::path::{Path, PathBuf};

use driver_core::refcount::MountRefs;
use driver_core::{
    Change, CreateOpts, Driver, DriverEntry, DriverError, DriverOptions, DriverStatus, LayerId,
    LayerStack, MountOpts, Result, WhiteoutFormat,
};

use crate::layout::Layout;
use crate::mounter::MountApi;
use crate::options::{MountApiChoice, Overlay2Options};
use crate::probe::ProbeResult;

pub use crate::plan::{MountPlan, CHUNK_LAYERS, MAX_LOWER_LAYERS, MAX_STACK_LAYERS};

/// Registry name.
pub const NAME: &str = "overlay2";

/// The overlay2 driver. A cheap handle (paths and options): cloning it is free.
#[derive(Debug, Clone)]
pub struct Overlay2Driver {
    layout: Layout,
    opts: Overlay2Options,
    probe: ProbeResult,
    api: MountApi,
    refs: MountRefs,
}

/// The registry entry: preferred over vfs (priority 10).
pub fn entry() -> DriverEntry {
    DriverEntry {
        name: NAME,
        priority: 10,
        factory: |home, opts| Ok(Box::new(Overlay2Driver::new(home, opts)?)),
        probe: probe::probe,
    }
}

impl Overlay2Driver {
    /// Opens (creating if needed) the driver at `home`. Probes the kernel (cached per
    /// boot) and fails with `NotSupported` if overlay cannot work here; repairs missing
    /// short links and finishes interrupted removals.
    pub fn new(home: &Path, options: &DriverOptions) -> Result<Self> {
        let opts = Overlay2Options::parse(options)?;
        let layout = Layout::new(home);
        startup::prepare_home(&layout)?;
        let probe = probe::probe_cached(home)?;
        if !probe.supported {
            return Err(DriverError::NotSupported {
                driver: NAME.into(),
                reason: probe.reason.clone().unwrap_or_default(),
            });
        }
        let api = match opts.mount_api {
            MountApiChoice::Auto => probe.mount_api(),
            MountApiChoice::Classic => MountApi::Classic,
            MountApiChoice::New if probe.new_mount_api => MountApi::New,
            MountApiChoice::New => {
                return Err(DriverError::NotSupported {
                    driver: NAME.into(),
                    reason: "mount_api = new, but this kernel's overlay does not take lowerdir+ (Linux >= 6.8)".into(),
                })
            }
        };
        let d = Overlay2Driver {
            refs: MountRefs::new(layout.refs()),
            layout,
            opts,
            probe,
            api,
        };
        startup::repair(&d.layout, false)?;
        Ok(d)
    }

    /// Finishes interrupted work and, when `thorough` (or when the number of short
    /// links differs from the number of layers), checks every layer's `link` file and
    /// short link, recreating what is missing and pruning dangling links.
    pub fn repair(&self, thorough: bool) -> Result<()> {
        startup::repair(&self.layout, thorough)?;
        if thorough {
            internal::sweep_stale(self)?;
        }
        Ok(())
    }

    /// The mount API in use.
    pub fn mount_api(&self) -> MountApi {
        self.api
    }

    /// What the probe found.
    pub fn probe_result(&self) -> &ProbeResult {
        &self.probe
    }

    /// Most layers a mount can stack with the API in use.
    pub fn max_depth(&self) -> usize {
        match self.api {
            MountApi::New => MAX_STACK_LAYERS,
            // "l/" + 26 + ':' per layer in one page, besides upper/work/options.
            MountApi::Classic => 128,
        }
    }

    fn check_exists(&self, id: &LayerId) -> Result<()> {
        if self.exists(id) {
            Ok(())
        } else {
            Err(DriverError::NotFound { id: id.to_string() })
        }
    }

    /// Whether `id` is a read-write layer (it has a workdir).
    fn is_read_write(&self, id: &LayerId) -> bool {
        self.layout.work(id).is_dir()
    }

    /// Whether `parent` is the direct parent of `id` (then `diff/` is exactly the
    /// change set and native diff applies).
    fn is_parent(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<bool> {
        let lowers = self.layout.read_lowers(id)?;
        match parent {
            None => Ok(lowers.is_empty()),
            Some(p) => {
                if !self.exists(p) {
                    return Ok(false);
                }
                Ok(lowers.first() == Some(&self.layout.read_link(p)?))
            }
        }
    }

    fn use_native(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<bool> {
        Ok(self.probe.native_diff && self.is_parent(id, parent)?)
    }

    /// Directories of the ancestors' content, nearest first (through the short links).
    fn lower_dirs(&self, id: &LayerId) -> Result<Vec<PathBuf>> {
        Ok(self
            .layout
            .read_lowers(id)?
            .iter()
            .map(|s| self.layout.link_path(s))
            .collect())
    }
}

impl Driver for Overlay2Driver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn home(&self) -> &Path {
        self.layout.home()
    }

    fn status(&self) -> DriverStatus {
        let p = &self.probe;
        let yes = |b: bool| if b { "true" } else { "false" }.to_owned();
        let mut s = vec![
            ("Backing Filesystem".to_owned(), p.backing_fs.clone()),
            ("Supports d_type".to_owned(), yes(p.d_type)),
            ("Native Overlay Diff".to_owned(), yes(p.native_diff)),
            ("Mount API".to_owned(), self.api.describe().to_owned()),
            ("Max Depth".to_owned(), self.max_depth().to_string()),
            (
                "Index".to_owned(),
                if self.opts.index { "on" } else { "off" }.to_owned(),
            ),
        ];
        if let Some(r) = &p.native_diff_reason {
            s.push(("Native Diff Disabled Because".to_owned(), r.clone()));
        }
        s
    }

    #[tracing::instrument(skip(self, opts), fields(kind = ?opts.kind))]
    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        create::create(self, id, parent, opts)
    }

    #[tracing::instrument(skip(self))]
    fn remove(&self, id: &LayerId) -> Result<()> {
        remove::remove(self, id)
    }

    fn exists(&self, id: &LayerId) -> bool {
        self.layout.diff(id).is_dir()
    }

    #[tracing::instrument(skip(self, opts))]
    fn mount(&self, id: &LayerId, opts: &MountOpts) -> Result<PathBuf> {
        mount::mount(self, id, opts)
    }

    #[tracing::instrument(skip(self))]
    fn unmount(&self, id: &LayerId) -> Result<()> {
        mount::unmount(self, id)
    }

    fn mount_count(&self, id: &LayerId) -> Result<u32> {
        mount::mount_count(self, id)
    }

    fn unlocked_create(&self) -> bool {
        // `.creating-<pid>-<id>` is left alone by cleanup while its process lives.
        true
    }

    #[tracing::instrument(skip(self, diff))]
    fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut dyn Read,
    ) -> Result<u64> {
        // The layer's own lowers say what lies below; `parent` is the same layer.
        let _ = parent;
        Ok(driver_core::apply_to_stack(&self.stack(id)?, diff)?.content_bytes)
    }

    #[tracing::instrument(skip(self, diff))]
    fn apply_diff_chunked(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut dyn driver_core::ChunkedRead,
    ) -> Result<u64> {
        let _ = parent; // as in apply_diff
        let stream = driver_core::LayerStream::Chunked(diff);
        Ok(driver_core::apply_stream_to_stack(&self.stack(id)?, stream)?.content_bytes)
    }

    #[tracing::instrument(skip(self))]
    fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Box<dyn Read + Send>> {
        self.check_exists(id)?;
        if self.use_native(id, parent)? {
            diff::native_diff(self.stack(id)?)
        } else {
            naive::diff(self, id, parent)
        }
    }

    #[tracing::instrument(skip(self))]
    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        self.check_exists(id)?;
        if self.use_native(id, parent)? {
            changes::native_changes(self.stack(id)?)
        } else {
            naive::changes(self, id, parent)
        }
    }

    #[tracing::instrument(skip(self))]
    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        self.check_exists(id)?;
        if self.use_native(id, parent)? {
            changes::native_size(self.stack(id)?)
        } else {
            naive::diff_size(self, id, parent)
        }
    }

    /// Quick: see [`Overlay2Driver::repair`]; the thorough pass runs when the number
    /// of short links and layers differ (every single interruption shows up that way).
    /// Also unmounts internal mounts of deep stacks that no mount uses any more.
    fn cleanup(&self) -> Result<()> {
        startup::repair(&self.layout, false)?;
        internal::sweep_stale(self)
    }

    /// The full pass of [`startup::repair`]: every layer's `link` file and short link
    /// re-derived, dangling links pruned; then the internal mounts swept.
    fn repair(&self) -> Result<()> {
        startup::repair(&self.layout, true)?;
        internal::sweep_stale(self)
    }

    fn layer_dir(&self, id: &LayerId) -> Result<PathBuf> {
        self.check_exists(id)?;
        Ok(self.layout.diff(id))
    }

    /// `<id>/` and its `l/<short>` link, what [`remove::remove`] deletes.
    fn layer_paths(&self, id: &LayerId) -> Result<Vec<PathBuf>> {
        self.check_exists(id)?;
        let mut out = vec![self.layout.dir(id)];
        if let Ok(short) = self.layout.read_link(id) {
            out.push(self.layout.link_path(&short));
        }
        Ok(out)
    }

    fn layers(&self) -> Result<Vec<LayerId>> {
        list::layers(&self.layout)
    }

    /// Interrupted creates/removals, stale probe dirs, broken short links
    /// ([`list::broken_links`], fixed by [`Driver::repair`]), and internal mounts of deep
    /// stacks that no overlay uses any more (left by a `layerctl mount` killed between
    /// the internal and the outer mount; found from the counts in `refs/`, the mount
    /// table read only to confirm a suspect: [`internal`]); `cleanup` removes them all.
    fn leftovers(&self) -> Result<Vec<PathBuf>> {
        let mut out = list::leftovers(&self.layout)?;
        out.extend(list::broken_links(&self.layout)?);
        out.extend(internal::unused(self)?);
        out.sort();
        Ok(out)
    }

    fn stack(&self, id: &LayerId) -> Result<LayerStack> {
        self.check_exists(id)?;
        let mut branches = vec![self.layout.diff(id)];
        for l in self.lower_dirs(id)? {
            // `l/<short>` -> `../<id>/diff`: name the directory itself, so the branch
            // root is a directory and not the link.
            let target = std::fs::read_link(&l).map_err(|e| DriverError::Corrupt {
                id: id.to_string(),
                reason: format!("short link {}: {e}", l.display()),
            })?;
            branches.push(match target.strip_prefix("..") {
                Ok(rel) => self.layout.home().join(rel),
                Err(_) => l,
            });
        }
        Ok(LayerStack::new(branches, WhiteoutFormat::Overlay))
    }
}
