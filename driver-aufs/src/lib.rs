//! # driver-aufs: Docker's aufs storage driver, with our own userspace aufs
//!
//! Layers are kept as Docker's aufs driver kept them and stacked as an aufs union:
//! a container's writable layer `=rw` on top, then its `-init` layer and the image
//! layers `=ro+wh`, nearest first. Two backends mount the same branch directories:
//!
//! - **kernel**: aufs in the kernel, where `/proc/filesystems` lists it (it is not in
//!   mainline Linux). The mount plan is Docker's `br:` data plus `remount,append:` for
//!   the branches that do not fit one page ([`kernel`]).
//! - **userspace**: our own union filesystem over FUSE ([`fs`]), served by a separate
//!   process (`layerctl-aufs-server`, [`server`]) so the mount outlives the `layerctl`
//!   command that made it. The union rules are driver_core's ([`driver_core::stack`],
//!   [`driver_core::copyup`]): lookup top down, `.wh.<name>` hides the name below,
//!   `.wh..wh..opq` stops the walk, listings merge the branches and never show `.wh.*`;
//!   a change to a lower entry copies it up into the rw branch first; unlink and rmdir
//!   of a lower entry leave a whiteout; mkdir over a whited-out name makes an opaque
//!   directory; names starting with `.wh.` cannot be created (`EPERM`), nor names
//!   longer than 251 bytes (`ENAMETOOLONG`: `.wh.` + name must fit `NAME_MAX`, so a
//!   longer name could never be deleted; kernel aufs limits names to 242 bytes,
//!   [`fs`] has the rule and its aufs source).
//!
//! `mode = auto` (the default) picks the kernel when it has aufs, else userspace
//! ([`options`]: also the server program, its thread count and FUSE passthrough).
//! `layerctl info` shows the backend in use and why the other one is not
//! ([`Driver::status`]: `Backend`, `Kernel aufs` / `Userspace aufs`, `Max Branches`,
//! `Server Threads`, `File Opens`).
//!
//! Speed of the userspace backend (BENCHMARKS.md): entries, attributes, pages and
//! directory listings are cached by the kernel with long TTLs (every change goes
//! through the server, and the kernel drops what each change invalidates); children
//! are looked up from the parent's remembered merge set; OPENDIR is declined
//! (`no_opendir`: a walk of cached directories sends the server nothing) and FLUSH too
//! (no round trip at close). With `passthrough = true` (the default) files of 1 MiB or
//! more are opened with FUSE passthrough, so their data never crosses the server, and
//! smaller read-only opens are answered without opening a backing file; what is left
//! per file is the OPEN and RELEASE round trip. `passthrough = false` declines OPEN and
//! CREATE too (`no_open`: opening, creating and closing a file then costs no round trip
//! beyond its lookup or MKNOD; reads and writes are served by inode), at the price of
//! large files read through FUSE's page cache ([`options`] has the trade). Copy-up of a
//! file whose directory is in the rw branch already moves only that file's node (no
//! re-lookup of the path), and copies through two open descriptors.
//!
//! ## On-disk layout (`<home>` is `<root>/aufs`, as `/var/lib/docker/aufs`)
//! ```text
//! <home>/
//!   diff/<id>/               the layer's own content in AUFS form: deletions are
//!                            `.wh.<name>` files, an opaque dir holds `.wh..wh..opq`,
//!                            aufs internals live in `.wh..wh.plnk|aufs|orph`
//!   diff/.creating-<id>/     a layer being created (renamed to <id> when complete)
//!   diff/.<id>-removing/     a layer being removed (finished by cleanup)
//!   layers/<id>              every ancestor id, nearest first, one a line
//!   mnt/<id>/                the union mount point
//!   refs/<id>, refs/.lock    mount reference counts (driver_core::refcount)
//!   run/<id>.pid, <id>.log   the userspace server of a mounted layer, its stderr
//! ```
//! A layer exists when `diff/<id>` is a directory: it is published last by `create`
//! and unpublished first by `remove`.
//!
//! ## Mounting (userspace)
//! `mount` starts the server (`<server> serve --mountpoint mnt/<id> --branch ...`),
//! which mounts with `allow_other,default_permissions,suid,dev` (a container root: the
//! kernel checks permissions for every uid, setuid binaries and device nodes work),
//! answers FUSE's INIT, then tells the driver it is ready. `unmount` of the last
//! reference unmounts and waits for the server to exit. A server that died leaves a
//! dead mount ("Transport endpoint is not connected"): the next `mount`, `unmount` or
//! `cleanup` detaches it and resets the count. Data written and fsynced through the
//! mount is in the rw branch's files, so a dead server loses nothing of it.
//!
//! ## Locking rules
//! - create/remove/apply_diff are serialised by the caller (the layer store's lock).
//! - mount/unmount hold the exclusive flock `refs/.lock` across server start and
//!   unmount, so concurrent processes start one server per layer and count right.
//!   Whether a layer is mounted, and whether its server still answers, is asked of its
//!   mount point each time (statx `STATX_ATTR_MOUNT_ROOT`, then `statfs`; `ENOTCONN`
//!   is a dead server), never of the whole `/proc/self/mountinfo`.

mod create;
pub mod fs;
pub mod kernel;
pub mod layout;
mod mount;
pub use mount::READ_AHEAD_KB;
mod native;
pub mod options;
pub mod server;

use std::io::Read;
use std::path::{Path, PathBuf};

use driver_core::naive::{naive_changes, naive_diff, naive_diff_size};
use driver_core::refcount::MountRefs;
use driver_core::{
    Change, CreateOpts, Driver, DriverEntry, DriverError, DriverOptions, DriverStatus, LayerId,
    LayerStack, MountOpts, Result, WhiteoutFormat,
};

use crate::layout::Layout;
use crate::options::{AufsOptions, ModeChoice, ServerCommand};

/// Registry name.
pub const NAME: &str = "aufs";

/// Most branches a userspace mount stacks. The FUSE server has no hard limit; a lookup
/// costs one `lstat` per branch it passes, so this only keeps a runaway image from
/// making every lookup crawl (2,000-layer images are tested end to end).
pub const USERSPACE_MAX_BRANCHES: usize = 4096;

/// Which backend mounts stacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Kernel aufs.
    Kernel,
    /// Our FUSE server, run as this command.
    Userspace(ServerCommand),
}

/// The aufs driver. A cheap handle (paths and options): cloning it is free.
#[derive(Debug, Clone)]
pub struct AufsDriver {
    layout: Layout,
    opts: AufsOptions,
    backend: Backend,
    /// Why the kernel backend is not in use (for `layerctl info`).
    kernel_reason: Option<String>,
    refs: MountRefs,
}

/// The registry entry: after overlay2 (10), before vfs (100), where kernel aufs or FUSE
/// exists. The server is found by [`ServerCommand::default_location`]; a program that
/// carries the server itself builds its own entry around [`AufsDriver::with_server`].
pub fn entry() -> DriverEntry {
    DriverEntry {
        name: NAME,
        priority: 20,
        factory: |home, opts| Ok(Box::new(AufsDriver::new(home, opts)?)),
        probe: |_home| probe_any(),
    }
}

/// Whether some backend can work here: kernel aufs, or `/dev/fuse` with `fuse` in
/// `/proc/filesystems`.
pub fn probe_any() -> Result<()> {
    if kernel::probe_kernel().is_ok() {
        return Ok(());
    }
    probe_fuse()
}

/// Whether the userspace backend can mount here.
pub fn probe_fuse() -> Result<()> {
    let text = std::fs::read_to_string("/proc/filesystems")
        .map_err(|e| DriverError::io("read", "/proc/filesystems", e))?;
    let has = text
        .lines()
        .any(|l| l.split_whitespace().last() == Some("fuse"));
    if !has || !Path::new("/dev/fuse").exists() {
        return Err(DriverError::NotSupported {
            driver: NAME.into(),
            reason: "neither kernel aufs nor FUSE (/dev/fuse) is available".into(),
        });
    }
    Ok(())
}

impl AufsDriver {
    /// Opens (creating if needed) the driver at `home` with `[driver_options.aufs]`.
    /// The userspace server is the one named by the `server` option, else
    /// [`ServerCommand::default_location`].
    ///
    /// Errors: `InvalidOption` for bad options; `NotSupported` when the chosen backend
    /// cannot work here (with the reason).
    pub fn new(home: &Path, options: &DriverOptions) -> Result<Self> {
        Self::with_server(home, options, ServerCommand::default_location())
    }

    /// [`AufsDriver::new`] with `server` as the server command when the options name
    /// none (a multi-call binary such as `layerctl` passes itself and its hidden
    /// subcommand).
    pub fn with_server(
        home: &Path,
        options: &DriverOptions,
        server: Option<ServerCommand>,
    ) -> Result<Self> {
        let opts = AufsOptions::parse(options)?;
        let server = match &opts.server {
            Some(p) => Some(ServerCommand {
                program: p.clone(),
                args: Vec::new(),
            }),
            None => server,
        };
        let kernel = kernel::probe_kernel();
        let kernel_reason = kernel.as_ref().err().map(|e| e.to_string());
        let userspace = || -> Result<Backend> {
            probe_fuse()?;
            let s = server.clone().ok_or_else(|| DriverError::NotSupported {
                driver: NAME.into(),
                reason: format!(
                    "no userspace server: set [driver_options.aufs] server, ${}, or install {} beside the executable",
                    options::SERVER_ENV,
                    options::SERVER_BIN
                ),
            })?;
            Ok(Backend::Userspace(s))
        };
        let backend = match opts.mode {
            ModeChoice::Kernel => {
                kernel?;
                Backend::Kernel
            }
            ModeChoice::Userspace => userspace()?,
            ModeChoice::Auto if kernel.is_ok() => Backend::Kernel,
            ModeChoice::Auto => userspace()?,
        };
        let layout = Layout::new(home);
        create::prepare_home(&layout)?;
        let d = AufsDriver {
            refs: MountRefs::new(layout.refs()),
            layout,
            opts,
            backend,
            kernel_reason,
        };
        tracing::debug!(home = %home.display(), backend = ?d.backend, "opened aufs driver");
        Ok(d)
    }

    /// The backend in use.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The paths of the driver's tree.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Most branches one mount may stack with the backend in use.
    pub fn max_branches(&self) -> usize {
        match self.backend {
            Backend::Kernel => kernel::KERNEL_MAX_BRANCHES,
            Backend::Userspace(_) => USERSPACE_MAX_BRANCHES,
        }
    }

    fn check_exists(&self, id: &LayerId) -> Result<()> {
        if self.exists(id) {
            Ok(())
        } else {
            Err(DriverError::NotFound { id: id.to_string() })
        }
    }

    /// Whether `parent` is `id`'s direct parent (then `diff/<id>` is the change set).
    fn is_parent(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<bool> {
        let anc = self.layout.read_ancestors(id)?;
        Ok(anc.first() == parent)
    }
}

impl Driver for AufsDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn home(&self) -> &Path {
        self.layout.home()
    }

    fn status(&self) -> DriverStatus {
        let mut s = vec![(
            "Backend".to_owned(),
            match &self.backend {
                Backend::Kernel => "kernel aufs".to_owned(),
                Backend::Userspace(c) => {
                    format!("userspace aufs over FUSE ({})", c.program.display())
                }
            },
        )];
        match (&self.backend, &self.kernel_reason) {
            (Backend::Userspace(_), Some(r)) => {
                s.push(("Kernel aufs".to_owned(), format!("not used: {r}")))
            }
            (Backend::Userspace(_), None) => s.push((
                "Kernel aufs".to_owned(),
                "available, not used: mode = userspace".to_owned(),
            )),
            (Backend::Kernel, _) => s.push((
                "Userspace aufs".to_owned(),
                "not used: the kernel has aufs (mode = userspace forces it)".to_owned(),
            )),
        }
        s.push(("Max Branches".to_owned(), self.max_branches().to_string()));
        if let Backend::Userspace(_) = self.backend {
            s.push(("Server Threads".to_owned(), self.opts.threads.to_string()));
            s.push((
                "File Opens".to_owned(),
                if self.opts.passthrough {
                    "one FUSE OPEN per file; passthrough for files >= 1 MiB (passthrough = true)"
                } else {
                    "no FUSE OPEN round trips, page cache kept (no_open; passthrough = false)"
                }
                .to_owned(),
            ));
        }
        s
    }

    #[tracing::instrument(skip(self, opts), fields(kind = ?opts.kind))]
    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        create::create(self, id, parent, opts)
    }

    #[tracing::instrument(skip(self))]
    fn remove(&self, id: &LayerId) -> Result<()> {
        create::remove(self, id)
    }

    fn exists(&self, id: &LayerId) -> bool {
        std::fs::symlink_metadata(self.layout.diff(id)).is_ok_and(|m| m.is_dir())
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

    #[tracing::instrument(skip(self, diff))]
    fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut dyn Read,
    ) -> Result<u64> {
        // The layer's own `layers/<id>` says what lies below; `parent` is the same.
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
        if self.is_parent(id, parent)? {
            native::native_diff(self.stack(id)?)
        } else {
            tracing::debug!(%id, ?parent, "naive diff: parent is not the direct parent");
            naive_diff(self, id, parent)
        }
    }

    #[tracing::instrument(skip(self))]
    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        self.check_exists(id)?;
        if self.is_parent(id, parent)? {
            native::native_changes(self.stack(id)?)
        } else {
            naive_changes(self, id, parent)
        }
    }

    #[tracing::instrument(skip(self))]
    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        self.check_exists(id)?;
        if self.is_parent(id, parent)? {
            native::native_size(self.stack(id)?)
        } else {
            naive_diff_size(self, id, parent)
        }
    }

    /// Finishes interrupted creates and removals, removes stray `layers/`, `mnt/` and
    /// temp entries, and detaches mounts whose server died.
    fn cleanup(&self) -> Result<()> {
        mount::detach_dead_mounts(self)?;
        create::cleanup(self)
    }

    fn layer_dir(&self, id: &LayerId) -> Result<PathBuf> {
        self.check_exists(id)?;
        Ok(self.layout.diff(id))
    }

    /// `diff/<id>`, `layers/<id>`, `mnt/<id>` and the server's files, what
    /// [`create::remove`] deletes.
    fn layer_paths(&self, id: &LayerId) -> Result<Vec<PathBuf>> {
        self.check_exists(id)?;
        let l = &self.layout;
        Ok(vec![
            l.diff(id),
            l.layers_file(id),
            l.mnt(id),
            l.pid_file(id),
            l.log_file(id),
        ])
    }

    fn layers(&self) -> Result<Vec<LayerId>> {
        create::layers(&self.layout)
    }

    /// [`Driver::leftovers`]: the layout's ([`create::leftovers`]) and, in every layer's
    /// branch, the copy-up temps of dead processes (a whole-tree walk per layer, which
    /// is why the cheap [`Driver::cleanup`] of every store open does not look for them;
    /// [`Driver::repair`] and the next mount after a server died remove them).
    fn leftovers(&self) -> Result<Vec<PathBuf>> {
        let mut out = create::leftovers(&self.layout)?;
        for id in create::layers(&self.layout)? {
            out.extend(create::dead_copyup_temps(&self.layout, &id)?);
        }
        out.sort();
        Ok(out)
    }

    fn repair(&self) -> Result<()> {
        self.cleanup()?;
        for id in create::layers(&self.layout)? {
            create::sweep_copyup_temps(&self.layout, &id)?;
        }
        Ok(())
    }

    fn crash_mount(&self, id: &LayerId, mountpoint: &Path) -> Result<bool> {
        mount::crash(self, id, mountpoint)
    }

    fn stack(&self, id: &LayerId) -> Result<LayerStack> {
        self.check_exists(id)?;
        let mut branches = vec![self.layout.diff(id)];
        for a in self.layout.read_ancestors(id)? {
            if !self.exists(&a) {
                return Err(DriverError::Corrupt {
                    id: id.to_string(),
                    reason: format!(
                        "ancestor {a} listed in {} is missing",
                        self.layout.layers_file(id).display()
                    ),
                });
            }
            branches.push(self.layout.diff(&a));
        }
        Ok(LayerStack::new(branches, WhiteoutFormat::Aufs))
    }
}
