//! Plan, then execute: the pure part of mounting. [`plan`] turns a layer's metadata and
//! the options into a [`MountPlan`] (plain data, inspected by unit tests without root);
//! [`crate::mounter`] carries it out.

use std::path::{Path, PathBuf};

use driver_core::{DriverError, LayerId, MountOpts, Result};

use crate::layout::{Layout, LINK_DIR};
use crate::options::Overlay2Options;

/// Most lower layers one overlay mount may have: the kernel's `OVL_MAX_STACK`
/// (fs/overlayfs/params.h, 500 since Linux 4.x). Measured here: 500 mount, 501 fail.
pub const MAX_LOWER_LAYERS: usize = 500;

/// Lower layers per internal mount of a deep stack (see [`plan`]): stacks deeper than
/// [`MAX_LOWER_LAYERS`] are cut from the bottom into groups of this many layers, each
/// mounted once as a read-only overlay and used as one lower dir. Fixed, so a layer's
/// group (and its internal mount) is the same in every stack that holds it. The
/// kernel's own limit is the best size measured (BENCHMARKS.md, "deep stacks"): fewer,
/// larger internal mounts cost less than many small ones. One less than the limit: a
/// group above the bottom one mounts its own whiteout summary below its layers (see
/// [`InternalMount`]), 499 + 1 = 500 lower dirs.
pub const CHUNK_LAYERS: usize = MAX_LOWER_LAYERS - 1;

/// Most internal mounts one mount may stack: every internal mount but the bottom one
/// brings its whiteout summary as a second lower dir, and both must fit in
/// [`MAX_LOWER_LAYERS`] (2 * 250 - 1 = 499).
pub const MAX_CHUNKS: usize = MAX_LOWER_LAYERS.div_ceil(2);

/// Most lower layers a mount can have with one level of internal mounts:
/// [`MAX_CHUNKS`] groups (499 lower dirs with their summaries) and one more layer used
/// directly, 124,751. One level only: the kernel stacks at most two overlays
/// (`FILESYSTEM_MAX_STACK_DEPTH` = 2), so an internal mount cannot have internal mounts.
pub const MAX_STACK_LAYERS: usize = max_stack_layers(CHUNK_LAYERS);

/// [`MAX_STACK_LAYERS`] for groups of `chunk` layers.
pub const fn max_stack_layers(chunk: usize) -> usize {
    MAX_CHUNKS * chunk + MAX_LOWER_LAYERS + 1 - 2 * MAX_CHUNKS
}

/// Name of an internal mount's mount point inside its key layer's directory.
pub const LOWER_MERGED: &str = "lower-merged";
/// Name of an internal mount's whiteout summary inside its key layer's directory.
pub const LOWER_WHITEOUTS: &str = "lower-wh";

/// mount(2) copies at most one page of option data, including the terminating NUL;
/// longer strings are cut and fail with a misleading EINVAL. The new mount API has no
/// such limit (one `fsconfig` call per `lowerdir+`).
pub const PAGE_OPTIONS_MAX: usize = 4096;

/// A VFS flag that is not an overlay option but a mount attribute (mount(2) flag or
/// fsmount attribute): the option words `ro`, `nodev`, ... in `mountopt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfsFlag {
    /// `ro`
    ReadOnly,
    /// `nodev`
    NoDev,
    /// `nosuid`
    NoSuid,
    /// `noexec`
    NoExec,
    /// `noatime`
    NoAtime,
    /// `nodiratime`
    NoDirAtime,
    /// `relatime`
    RelAtime,
}

impl VfsFlag {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "ro" => VfsFlag::ReadOnly,
            "nodev" => VfsFlag::NoDev,
            "nosuid" => VfsFlag::NoSuid,
            "noexec" => VfsFlag::NoExec,
            "noatime" => VfsFlag::NoAtime,
            "nodiratime" => VfsFlag::NoDirAtime,
            "relatime" => VfsFlag::RelAtime,
            _ => return None,
        })
    }
}

/// Everything needed to mount one overlay, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// The driver home; `lowerdirs`, `upperdir` and `workdir` are relative to it.
    pub home: PathBuf,
    /// Lower layers, topmost (nearest) first: `l/<short>` (or `<id>/diff`).
    pub lowerdirs: Vec<PathBuf>,
    /// `<id>/diff` of a read-write layer; `None` for a read-only view.
    pub upperdir: Option<PathBuf>,
    /// `<id>/work`, with `upperdir`.
    pub workdir: Option<PathBuf>,
    /// Absolute mount point (`<home>/<id>/merged`).
    pub target: PathBuf,
    /// Overlay options besides the dirs: `index=off`, `mountopt`, the caller's.
    pub options: Vec<String>,
    /// Mount attributes (`nodev`...) taken out of the option words.
    pub flags: Vec<VfsFlag>,
    /// SELinux label (`context=`).
    pub label: Option<String>,
    /// Internal read-only mounts this mount stacks on, bottom first (the order to mount
    /// them in); empty unless the stack is deeper than [`MAX_LOWER_LAYERS`].
    pub internal: Vec<InternalMount>,
}

/// An internal mount of a deep stack: `CHUNK_LAYERS` consecutive layers (fewer for the
/// top group of a very deep stack), counted from the bottom, mounted as a lowerdir-only
/// overlay at `<home>/<key>/lower-merged` and used by the outer mount as one lower dir.
/// Shared by every mount that stacks the same group, counted in `refs/<key>.lower`.
///
/// An overlay hides the whiteouts and opaque markers of its layers from an overlay
/// stacked on it, so a whiteout in the group could not delete a file of the groups
/// below. Each group but the bottom one therefore has a whiteout summary,
/// `<home>/<key>/lower-wh`: a real directory holding one 0/0 char device per path the
/// group's layers delete and a `trusted.overlay.opaque=y` directory per opaque one,
/// placed right below the group's mount in the outer mount. It hides exactly what the
/// group deletes from the groups below, and nothing of the group itself (which is above).
///
/// The summary is also the bottom lower dir of the group's own mount: a directory that
/// only one layer of the group has is passed through by overlayfs unmerged, and its
/// whiteouts (meant for the groups below) would be listed by `readdir` while `stat`
/// says they do not exist. With the summary below, every directory holding a whiteout
/// is merged, so its whiteouts are filtered; the summary shows nothing of its own (each
/// of its entries lies under a whiteout of a layer above it in the group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalMount {
    /// The id of the group's top layer: names the mount point and the count.
    pub key: LayerId,
    /// The read-only overlay of the group's layers (`lowerdirs` topmost first, no upper,
    /// target `<home>/<key>/lower-merged`).
    pub plan: MountPlan,
    /// `<key>/lower-wh`, relative to home; `None` for the bottom group (nothing below).
    pub whiteouts: Option<PathBuf>,
}

impl InternalMount {
    /// The key of its mount count in `refs/`: `<key>.lower` (never a layer's own count).
    pub fn count_key(&self) -> String {
        count_key(&self.key)
    }
}

/// The mount count key of the internal mount keyed by layer `key`: `<key>.lower`.
pub fn count_key(key: &LayerId) -> String {
    format!("{}.lower", key.as_str())
}

/// Finds the layer id behind a short link name (`l/<short> -> ../<id>/diff`).
pub type ResolveLink<'a> = &'a dyn Fn(&str) -> Result<LayerId>;

/// What the planner needs to know about the layer being mounted.
#[derive(Clone, Copy)]
pub struct StackInfo<'a> {
    /// The layer.
    pub id: &'a LayerId,
    /// Its short link name.
    pub link: &'a str,
    /// Its ancestors' short links, nearest first.
    pub lowers: &'a [String],
    /// Read-write layer (mounted with upperdir) or read-only view.
    pub read_write: bool,
    /// Names the key layers of internal mounts; only called for stacks deeper than
    /// [`MAX_LOWER_LAYERS`] (one call per internal mount).
    pub resolve: ResolveLink<'a>,
}

impl std::fmt::Debug for StackInfo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackInfo")
            .field("id", self.id)
            .field("link", &self.link)
            .field("lowers", &self.lowers.len())
            .field("read_write", &self.read_write)
            .finish()
    }
}

/// Options that only make sense with an upper layer; dropped for read-only views.
const UPPER_ONLY: &[&str] = &["volatile"];

/// How many lower layers a layer's mount needs: its ancestors, plus itself when it is a
/// read-only view (its own diff is then a lower layer too).
pub fn lower_count(ancestors: usize, read_write: bool) -> usize {
    if read_write {
        ancestors
    } else if ancestors == 0 {
        0
    } else {
        ancestors + 1
    }
}

/// How a stack of lower layers is mounted: which lowers are used directly and which
/// are grouped into internal mounts. Pure arithmetic on the number of lowers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The topmost lowers used directly (they come first in the outer mount).
    pub direct: usize,
    /// Groups below them, as index ranges into the lowers (nearest first), topmost
    /// group first; each becomes an internal mount.
    pub groups: Vec<std::ops::Range<usize>>,
}

impl Shape {
    /// Lower dirs of the outer mount: the direct ones, each group's mount, and the
    /// whiteout summary of every group but the bottom one.
    pub fn outer_lowers(&self) -> usize {
        self.direct + (2 * self.groups.len()).saturating_sub(1)
    }
}

/// The shape of a mount with `lowers` lower layers, grouped in `chunk`s from the
/// bottom. Up to [`MAX_LOWER_LAYERS`] all are direct. Deeper: whole groups of `chunk`
/// from the bottom, the rest on top used directly when the outer mount's lowers fit in
/// [`MAX_LOWER_LAYERS`], else one more (smaller) group of the rest.
/// Error: [`DriverError::TooDeep`] naming `lowers` when more than [`MAX_CHUNKS`] groups
/// would be needed.
pub fn shape(lowers: usize, chunk: usize) -> Result<Shape> {
    if lowers <= MAX_LOWER_LAYERS {
        return Ok(Shape {
            direct: lowers,
            groups: Vec::new(),
        });
    }
    let full = lowers / chunk;
    let rest = lowers % chunk;
    // Group j (from the bottom) holds lowers[n - (j+1)*chunk .. n - j*chunk].
    let group = |j: usize| lowers - (j + 1) * chunk..lowers - j * chunk;
    let mut s = Shape {
        direct: rest,
        groups: (0..full).rev().map(group).collect(),
    };
    if s.outer_lowers() > MAX_LOWER_LAYERS && rest > 0 {
        s.direct = 0;
        s.groups.insert(0, 0..rest);
    }
    if s.groups.len() > MAX_CHUNKS || s.outer_lowers() > MAX_LOWER_LAYERS {
        return Err(DriverError::TooDeep {
            driver: format!(
                "overlay2 ({MAX_CHUNKS} internal mounts of {chunk} layers, kernel overlay \
                 stacking depth 2)"
            ),
            depth: lowers,
            limit: max_stack_layers(chunk),
        });
    }
    Ok(s)
}

/// Checks that a mount of `lowers` lower layers can be made (see [`shape`]).
pub fn check_depth(lowers: usize) -> Result<()> {
    shape(lowers, CHUNK_LAYERS).map(|_| ())
}

/// Plans the mount of a layer. `None` means no overlay is needed: a layer without
/// ancestors is its own root filesystem (`diff/` is returned directly, like Docker).
pub fn plan(
    layout: &Layout,
    stack: StackInfo<'_>,
    driver_opts: &Overlay2Options,
    mount_opts: &MountOpts,
) -> Result<Option<MountPlan>> {
    if stack.lowers.is_empty() {
        return Ok(None);
    }
    plan_chunked(layout, stack, driver_opts, mount_opts, CHUNK_LAYERS)
}

/// [`plan`] with groups of `chunk` layers (benchmarks and tests try other sizes).
pub fn plan_chunked(
    layout: &Layout,
    stack: StackInfo<'_>,
    driver_opts: &Overlay2Options,
    mount_opts: &MountOpts,
    chunk: usize,
) -> Result<Option<MountPlan>> {
    if stack.lowers.is_empty() {
        return Ok(None);
    }
    let link = |s: &str| Path::new(LINK_DIR).join(s);
    // All lowers, nearest first: a read-only view has its own diff on top.
    let mut all: Vec<&str> = Vec::with_capacity(stack.lowers.len() + 1);
    if !stack.read_write {
        all.push(stack.link);
    }
    all.extend(stack.lowers.iter().map(String::as_str));
    let shape = shape(all.len(), chunk)?;
    let mut lowerdirs: Vec<PathBuf> = all[..shape.direct].iter().map(|s| link(s)).collect();
    let mut internal = Vec::with_capacity(shape.groups.len());
    let bottom = shape.groups.len().saturating_sub(1);
    for (i, g) in shape.groups.iter().enumerate() {
        let top = all[g.start];
        let key = if top == stack.link {
            stack.id.clone()
        } else {
            (stack.resolve)(top)?
        };
        let dir = Path::new(key.as_str());
        lowerdirs.push(dir.join(LOWER_MERGED));
        let whiteouts = (i != bottom).then(|| dir.join(LOWER_WHITEOUTS));
        if let Some(w) = &whiteouts {
            lowerdirs.push(w.clone());
        }
        let mut group_lowers: Vec<PathBuf> = all[g.clone()].iter().map(|s| link(s)).collect();
        if let Some(w) = &whiteouts {
            group_lowers.push(w.clone());
        }
        internal.push(InternalMount {
            plan: MountPlan {
                home: layout.home().to_owned(),
                lowerdirs: group_lowers,
                upperdir: None,
                workdir: None,
                target: layout.home().join(dir).join(LOWER_MERGED),
                options: vec!["index=off".to_owned()],
                flags: Vec::new(),
                label: None,
                internal: Vec::new(),
            },
            key,
            whiteouts,
        });
    }
    // Mount order: bottom first.
    internal.reverse();

    let (upperdir, workdir) = if stack.read_write {
        let d = Path::new(stack.id.as_str());
        (Some(d.join("diff")), Some(d.join("work")))
    } else {
        (None, None)
    };

    let mut options = vec![format!(
        "index={}",
        if driver_opts.index { "on" } else { "off" }
    )];
    let mut flags = Vec::new();
    let words = driver_opts
        .mountopt
        .iter()
        .chain(mount_opts.options.iter())
        .flat_map(|o| o.split(','))
        .map(str::trim)
        .filter(|o| !o.is_empty());
    for w in words {
        if let Some(f) = VfsFlag::parse(w) {
            if !flags.contains(&f) {
                flags.push(f);
            }
        } else if upperdir.is_none() && UPPER_ONLY.contains(&w) {
            tracing::debug!(option = w, "dropping option that needs an upper layer");
        } else if w.starts_with("index=") {
            options[0] = w.to_owned();
        } else {
            options.push(w.to_owned());
        }
    }
    Ok(Some(MountPlan {
        home: layout.home().to_owned(),
        lowerdirs,
        upperdir,
        workdir,
        target: layout.merged(stack.id),
        options,
        flags,
        label: mount_opts.mount_label.clone(),
        internal,
    }))
}

impl MountPlan {
    /// `p` made absolute (joined to home).
    pub fn abs(&self, p: &Path) -> PathBuf {
        self.home.join(p)
    }

    /// The option string for classic mount(2), with dirs relative to home (the mount
    /// must run with home as the working directory, see [`crate::mounter`]).
    pub fn classic_data(&self) -> String {
        let mut parts = Vec::with_capacity(4 + self.options.len());
        let lowers: Vec<String> = self
            .lowerdirs
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        parts.push(format!("lowerdir={}", lowers.join(":")));
        if let (Some(u), Some(w)) = (&self.upperdir, &self.workdir) {
            parts.push(format!("upperdir={}", u.display()));
            parts.push(format!("workdir={}", w.display()));
        }
        parts.extend(self.options.iter().cloned());
        if let Some(l) = &self.label {
            parts.push(format!("context={l}"));
        }
        parts.join(",")
    }

    /// Checks that [`MountPlan::classic_data`] fits in one page; otherwise the error
    /// names how many layers fit.
    pub fn check_classic_fits(&self) -> Result<()> {
        let data = self.classic_data();
        if data.len() < PAGE_OPTIONS_MAX {
            return Ok(());
        }
        // How many lower layers would fit, given the same fixed part.
        let fixed = data.len()
            - self
                .lowerdirs
                .iter()
                .map(|p| p.as_os_str().len() + 1)
                .sum::<usize>();
        let per = self
            .lowerdirs
            .first()
            .map(|p| p.as_os_str().len() + 1)
            .unwrap_or(1);
        let fit = (PAGE_OPTIONS_MAX - 1).saturating_sub(fixed) / per;
        Err(DriverError::TooDeep {
            driver: format!(
                "overlay2 with classic mount(2) ({} option bytes, one page is {PAGE_OPTIONS_MAX}; \
                 this kernel lacks the new mount API)",
                data.len() + 1
            ),
            depth: self.lowerdirs.len(),
            limit: fit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::new_short_id;

    fn shorts(n: usize) -> Vec<String> {
        (0..n).map(|_| new_short_id()).collect()
    }

    fn no_resolve(s: &str) -> Result<LayerId> {
        panic!("no internal mounts expected, asked for {s}")
    }

    fn id() -> LayerId {
        LayerId::new("c0ffee").unwrap()
    }

    #[test]
    fn base_layer_needs_no_mount() {
        let l = Layout::new("/h");
        let id = id();
        let st = StackInfo {
            id: &id,
            link: "AAAAAAAAAAAAAAAAAAAAAAAAAA",
            lowers: &[],
            read_write: true,
            resolve: &no_resolve,
        };
        assert!(plan(&l, st, &Default::default(), &Default::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn read_write_plan_uses_short_links_and_upper() {
        let l = Layout::new("/var/lib/layerctl/overlay2");
        let id = id();
        let lowers = shorts(3);
        let st = StackInfo {
            id: &id,
            link: "AAAAAAAAAAAAAAAAAAAAAAAAAA",
            lowers: &lowers,
            read_write: true,
            resolve: &no_resolve,
        };
        let mo = MountOpts {
            mount_label: Some("system_u:object_r:container_file_t:s0".into()),
            options: vec!["nodev,volatile".into()],
        };
        let p = plan(&l, st, &Default::default(), &mo).unwrap().unwrap();
        assert_eq!(p.lowerdirs.len(), 3);
        assert_eq!(p.lowerdirs[0], Path::new("l").join(&lowers[0]));
        assert_eq!(p.upperdir.as_deref(), Some(Path::new("c0ffee/diff")));
        assert_eq!(p.workdir.as_deref(), Some(Path::new("c0ffee/work")));
        assert_eq!(
            p.target,
            Path::new("/var/lib/layerctl/overlay2/c0ffee/merged")
        );
        assert_eq!(p.options, vec!["index=off", "volatile"]);
        assert_eq!(p.flags, vec![VfsFlag::NoDev]);
        assert_eq!(
            p.classic_data(),
            format!(
                "lowerdir=l/{}:l/{}:l/{},upperdir=c0ffee/diff,workdir=c0ffee/work,index=off,volatile,\
                 context=system_u:object_r:container_file_t:s0",
                lowers[0], lowers[1], lowers[2]
            )
        );
        assert_eq!(
            p.abs(&p.lowerdirs[0]),
            Path::new("/var/lib/layerctl/overlay2/l").join(&lowers[0])
        );
    }

    #[test]
    fn read_only_view_has_own_diff_on_top_and_no_upper() {
        let l = Layout::new("/h");
        let id = id();
        let lowers = shorts(2);
        let st = StackInfo {
            id: &id,
            link: "OWNOWNOWNOWNOWNOWNOWNOWNOW",
            lowers: &lowers,
            read_write: false,
            resolve: &no_resolve,
        };
        let opts = Overlay2Options {
            mountopt: vec!["volatile".into()],
            index: true,
            ..Default::default()
        };
        let p = plan(&l, st, &opts, &Default::default()).unwrap().unwrap();
        assert_eq!(p.lowerdirs[0], Path::new("l/OWNOWNOWNOWNOWNOWNOWNOWNOW"));
        assert_eq!(p.lowerdirs.len(), 3);
        assert!(p.upperdir.is_none() && p.workdir.is_none());
        assert_eq!(
            p.options,
            vec!["index=on"],
            "volatile dropped without upper"
        );
    }

    #[test]
    fn up_to_500_lowers_mount_directly() {
        let l = Layout::new("/h");
        let id = id();
        let ok = shorts(MAX_LOWER_LAYERS);
        let st = StackInfo {
            id: &id,
            link: "AAAAAAAAAAAAAAAAAAAAAAAAAA",
            lowers: &ok,
            read_write: true,
            resolve: &no_resolve,
        };
        let p = plan(&l, st, &Default::default(), &Default::default())
            .unwrap()
            .unwrap();
        assert_eq!(p.lowerdirs.len(), 500);
        assert!(p.internal.is_empty());
        assert_eq!(lower_count(0, false), 0);
        assert_eq!(lower_count(3, false), 4);
        assert_eq!(lower_count(3, true), 3);
    }

    /// Short link `s` of the layer at bottom position `k` -> id `layer<k>`.
    fn resolver(shorts: &[String]) -> impl Fn(&str) -> Result<LayerId> + '_ {
        move |s: &str| {
            let k = shorts.iter().position(|x| x == s).expect("known link");
            LayerId::new(format!("layer{}", shorts.len() - 1 - k))
        }
    }

    #[test]
    fn a_container_on_2000_layers_stacks_four_shared_internal_mounts() {
        let l = Layout::new("/h");
        // Init layer + 2,000 image layers below the container, nearest first: bottom
        // position k is lowers[2000 - k] (the init layer is position 2000).
        let lowers = shorts(2001);
        let resolve = resolver(&lowers);
        let ctr = id();
        let st = StackInfo {
            id: &ctr,
            link: "CTRCTRCTRCTRCTRCTRCTRCTRCT",
            lowers: &lowers,
            read_write: true,
            resolve: &resolve,
        };
        let p = plan(&l, st, &Default::default(), &Default::default())
            .unwrap()
            .unwrap();
        // Groups of 499 from the bottom, keyed by their top layers; mount order bottom
        // first; the 5 topmost lowers (init + 4 image layers) are used directly.
        let keys: Vec<&str> = p.internal.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["layer498", "layer997", "layer1496", "layer1995"]);
        for (j, m) in p.internal.iter().enumerate() {
            // Topmost first: position 499j+498 down to 499j, then (above the bottom
            // group) the group's own whiteout summary.
            assert_eq!(m.plan.lowerdirs.len(), if j == 0 { 499 } else { 500 });
            assert_eq!(
                m.plan.lowerdirs[0],
                Path::new("l").join(&lowers[2000 - (499 * j + 498)])
            );
            assert_eq!(
                m.plan.lowerdirs[498],
                Path::new("l").join(&lowers[2000 - 499 * j])
            );
            if j > 0 {
                assert_eq!(
                    m.plan.lowerdirs[499],
                    Path::new(m.key.as_str()).join("lower-wh"),
                    "the summary is the group's bottom lower dir"
                );
            }
            assert!(m.plan.upperdir.is_none() && m.plan.internal.is_empty());
            assert_eq!(
                m.plan.target,
                Path::new("/h").join(m.key.as_str()).join("lower-merged")
            );
            assert_eq!(m.count_key(), format!("{}.lower", m.key.as_str()));
            assert_eq!(
                m.whiteouts.is_none(),
                j == 0,
                "no summary for the bottom group"
            );
        }
        // The outer mount: the direct lowers, then each group over its whiteout summary.
        let mut want: Vec<PathBuf> = lowers[..5].iter().map(|s| Path::new("l").join(s)).collect();
        want.extend([
            "layer1995/lower-merged".into(),
            "layer1995/lower-wh".into(),
            "layer1496/lower-merged".into(),
            "layer1496/lower-wh".into(),
            "layer997/lower-merged".into(),
            "layer997/lower-wh".into(),
            "layer498/lower-merged".into(),
        ]);
        assert_eq!(p.lowerdirs, want);
        assert_eq!(p.upperdir.as_deref(), Some(Path::new("c0ffee/diff")));

        // A second container on the same image shares all four; a read-only view of the
        // image's top layer too (its own diff is the position-1999 layer).
        let other = LayerId::new("other").unwrap();
        let lowers2: Vec<String> = std::iter::once(new_short_id())
            .chain(lowers[1..].iter().cloned())
            .collect();
        let resolve2 = resolver(&lowers2);
        let st2 = StackInfo {
            id: &other,
            lowers: &lowers2,
            resolve: &resolve2,
            ..st
        };
        let p2 = plan(&l, st2, &Default::default(), &Default::default())
            .unwrap()
            .unwrap();
        assert_eq!(p2.internal, p.internal);
        let top = LayerId::new("layer1999").unwrap();
        let st3 = StackInfo {
            id: &top,
            link: &lowers[1],
            lowers: &lowers[2..],
            read_write: false,
            resolve: &resolve,
        };
        let p3 = plan(&l, st3, &Default::default(), &Default::default())
            .unwrap()
            .unwrap();
        assert_eq!(p3.internal, p.internal);
        assert_eq!(p3.lowerdirs, want[1..]);
    }

    #[test]
    fn shapes_of_deep_stacks() {
        let sh = |n| shape(n, CHUNK_LAYERS).unwrap();
        assert_eq!(sh(500).groups.len(), 0);
        // 501 lowers: one group of 499 and the top two direct.
        let s = sh(501);
        assert_eq!(s.direct, 2);
        assert_eq!(s.groups, std::iter::once(2..501).collect::<Vec<_>>());
        // 1,497: two groups and 499 direct would be 502 lowers: the rest is a group too.
        let s = sh(1497);
        assert_eq!(s.direct, 0);
        assert_eq!(s.groups, vec![0..499, 499..998, 998..1497]);
        assert_eq!(s.outer_lowers(), 5);
        // The most: 250 groups (499 lower dirs with the summaries) and one direct.
        let s = sh(MAX_STACK_LAYERS);
        assert_eq!((s.direct, s.groups.len(), s.outer_lowers()), (1, 250, 500));
        assert_eq!(MAX_STACK_LAYERS, 124_751);
        match shape(MAX_STACK_LAYERS + 1, CHUNK_LAYERS) {
            Err(DriverError::TooDeep { depth, limit, .. }) => {
                assert_eq!((depth, limit), (124_752, 124_751))
            }
            other => panic!("{other:?}"),
        }
        // Smaller groups: more of them.
        let s = shape(2001, 100).unwrap();
        assert_eq!((s.direct, s.groups.len(), s.outer_lowers()), (1, 20, 40));
        assert!(check_depth(2001).is_ok());
    }

    #[test]
    fn page_limit_with_relative_short_links() {
        let l = Layout::new("/a/very/long/home/that/does/not/matter/because/paths/are/relative");
        let id = LayerId::new("f".repeat(64)).unwrap();
        let fits = |n: usize| {
            let lowers = shorts(n);
            let st = StackInfo {
                id: &id,
                link: "AAAAAAAAAAAAAAAAAAAAAAAAAA",
                lowers: &lowers,
                read_write: true,
                resolve: &no_resolve,
            };
            let p = plan(&l, st, &Default::default(), &Default::default())
                .unwrap()
                .unwrap();
            p.check_classic_fits()
        };
        // Each lower costs 29 bytes ("l/" + 26 + ':'): 128 layers fit in one page
        // (Docker's limit), 140 do not.
        fits(128).unwrap();
        match fits(140) {
            Err(DriverError::TooDeep { depth, limit, .. }) => {
                assert_eq!(depth, 140);
                assert!((128..140).contains(&limit), "{limit}");
            }
            other => panic!("{other:?}"),
        }
    }
}
