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
}

/// What the planner needs to know about the layer being mounted.
#[derive(Debug, Clone, Copy)]
pub struct StackInfo<'a> {
    /// The layer.
    pub id: &'a LayerId,
    /// Its short link name.
    pub link: &'a str,
    /// Its ancestors' short links, nearest first.
    pub lowers: &'a [String],
    /// Read-write layer (mounted with upperdir) or read-only view.
    pub read_write: bool,
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

/// Checks a depth against [`MAX_LOWER_LAYERS`].
pub fn check_depth(lowers: usize) -> Result<()> {
    if lowers > MAX_LOWER_LAYERS {
        return Err(DriverError::TooDeep {
            driver: "overlay2 / kernel overlayfs".into(),
            depth: lowers,
            limit: MAX_LOWER_LAYERS,
        });
    }
    Ok(())
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
    let link = |s: &str| Path::new(LINK_DIR).join(s);
    let mut lowerdirs = Vec::with_capacity(stack.lowers.len() + 1);
    if !stack.read_write {
        lowerdirs.push(link(stack.link));
    }
    lowerdirs.extend(stack.lowers.iter().map(|s| link(s)));
    check_depth(lowerdirs.len())?;

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
    fn depth_limit_is_500_lowers() {
        let l = Layout::new("/h");
        let id = id();
        let ok = shorts(MAX_LOWER_LAYERS);
        let st = StackInfo {
            id: &id,
            link: "AAAAAAAAAAAAAAAAAAAAAAAAAA",
            lowers: &ok,
            read_write: true,
        };
        assert!(plan(&l, st, &Default::default(), &Default::default()).is_ok());
        // The same ancestors viewed read-only need one more lower: the layer itself.
        let st = StackInfo {
            read_write: false,
            ..st
        };
        match plan(&l, st, &Default::default(), &Default::default()) {
            Err(DriverError::TooDeep { depth, limit, .. }) => {
                assert_eq!((depth, limit), (501, 500))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(lower_count(0, false), 0);
        assert_eq!(lower_count(3, false), 4);
        assert_eq!(lower_count(3, true), 3);
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
