//! `layerctl run [flags] IMAGE [-- CMD ARG...]`: create (or reuse `--name`) a container,
//! mount it, run the command through an OCI runtime ([`crate::runtime`]), wait,
//! unmount; `--rm` removes the container afterwards. Exit status: the process's.
//!
//! Order: flags checked (nothing made yet) -> store locked -> container created with
//! the hostname in its init layer -> mounted -> volumes' host dirs and mount points
//! made -> bundle written under [`STATE_ROOT`]`/bundles` -> lock released -> runtime
//! runs it -> lock taken again -> mount points we made removed -> unmounted -> `--rm`
//! (or a failure before the process started, for a container this run created):
//! container removed. A failure anywhere undoes what was done, so it leaves no mount
//! and no half container.

use std::path::{Path, PathBuf};

use anyhow::Context;
use layerstore::{ContainerName, LayerStore, LockMode};

use crate::config::Settings;
use crate::open::open_store;
use crate::runtime::spec::{self, SpecOptions};
use crate::runtime::volume::{self, MadeDirs, Volume};
use crate::runtime::{signals, RunError, Runtime, IN_PROCESS, STATE_ROOT};

/// The flags of `run` (and the shared ones of `bundle`).
#[derive(Debug, Clone, Default)]
pub struct RunArgs {
    /// `--name`.
    pub name: Option<String>,
    /// `--rm`.
    pub rm: bool,
    /// `-v` specs as given.
    pub volumes: Vec<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `-e`.
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-t`.
    pub tty: bool,
    /// `--net`.
    pub net: Option<String>,
    /// `--runtime` (overrides config `[run] runtime`).
    pub runtime: Option<String>,
    /// IMAGE.
    pub image: String,
    /// CMD ARG... after `--`.
    pub command: Vec<String>,
}

/// `--net host` (true) or `--net none` / absent (false: loopback only).
pub fn host_network(net: Option<&str>) -> Result<bool, RunError> {
    match net {
        None | Some("none") => Ok(false),
        Some("host") => Ok(true),
        Some(o) => Err(RunError::Usage(format!(
            "--net {o:?}: expected host or none"
        ))),
    }
}

/// The flags of `run` and `bundle` checked before anything is touched: volume specs,
/// `--net`, `-e` (in the form the process gets them) and `-w`.
pub struct CheckedFlags {
    /// `-v`, parsed.
    pub volumes: Vec<Volume>,
    /// `--net host`.
    pub host_network: bool,
    /// `-e`, as [`spec::env_flags`] gives them.
    pub env: Vec<String>,
}

/// Checks the flags `run` and `bundle` share. Errors: [`RunError::Usage`] naming the flag.
pub fn check_flags(args: &RunArgs) -> Result<CheckedFlags, RunError> {
    let volumes = args
        .volumes
        .iter()
        .map(|v| volume::parse(v))
        .collect::<Result<_, _>>()?;
    let host_network = host_network(args.net.as_deref())?;
    let env = spec::env_flags(&args.env)?;
    spec::check_workdir(args.workdir.as_deref())?;
    Ok(CheckedFlags {
        volumes,
        host_network,
        env,
    })
}

pub fn run(cfg: &Settings, args: &RunArgs) -> anyhow::Result<()> {
    signals::install();
    crate::runtime::sweep_stale();
    // Everything that can be checked without touching the store, first.
    let CheckedFlags {
        volumes,
        host_network: host_net,
        env,
    } = check_flags(args)?;
    if let Some(h) = &args.hostname {
        layerstore::initlayer::validate_hostname(h)?;
    }
    let runtime = Runtime::from_name(
        args.runtime
            .as_deref()
            .or(cfg.runtime.as_deref())
            .unwrap_or(IN_PROCESS),
    );
    let name = match &args.name {
        Some(n) => ContainerName::new(n)?,
        None => ContainerName::new(&format!(
            "run-{}",
            &driver_core::LayerId::random().as_str()[..12]
        ))?,
    };

    let store = open_store(cfg, LockMode::Exclusive)?;
    let mut st = RunState {
        name: name.clone(),
        created: false,
        exists: false,
        mounted: None,
        made: MadeDirs::default(),
        bundle: None,
    };
    let prepared = prepare(&store, args, &mut st, volumes, env, host_net);
    // Other commands may use the store while the process runs.
    drop(store);
    let started: anyhow::Result<i32> = match prepared {
        Ok(bundle) => runtime
            .run(&format!("layerctl-{name}"), &bundle)
            .map_err(Into::into),
        Err(e) => Err(e),
    };
    // The container goes when asked, or when this run made it and the process never ran;
    // never when there is none (an unknown image with --rm is one line, not two).
    let remove = (args.rm && st.exists) || (st.created && started.is_err());
    let cleaned = cleanup(cfg, &st, remove);
    if let (Err(primary), Err(ce)) = (&started, &cleaned) {
        // The run's own error is the line; the failed undo must not vanish.
        tracing::warn!(error = %primary, cleanup_error = %ce, "cleanup after a failed run failed too");
    }
    let status = started?;
    cleaned?;
    if status != 0 {
        return Err(RunError::Exited(status).into());
    }
    Ok(())
}

/// What a run has made so far, for [`cleanup`].
#[derive(Debug)]
struct RunState {
    name: ContainerName,
    /// This run created the container.
    created: bool,
    /// The container exists (found by `--name`, or created by this run).
    exists: bool,
    /// The root, while this run holds a mount reference.
    mounted: Option<PathBuf>,
    /// Mount point directories made in the root.
    made: MadeDirs,
    /// The bundle directory.
    bundle: Option<PathBuf>,
}

/// Creates or reuses the container, mounts it, prepares volumes and writes the bundle;
/// returns the bundle directory. Records each step in `st`.
fn prepare(
    store: &LayerStore,
    args: &RunArgs,
    st: &mut RunState,
    volumes: Vec<Volume>,
    env: Vec<String>,
    host_network: bool,
) -> anyhow::Result<PathBuf> {
    let image_id = store.resolve_image(&args.image)?;
    let rec = match store.container(&st.name) {
        Ok(rec) => {
            if rec.image != image_id {
                return Err(RunError::Usage(format!(
                    "container {} exists and uses image {}, not {}",
                    st.name, rec.image, args.image
                ))
                .into());
            }
            st.exists = true;
            rec
        }
        Err(layerstore::StoreError::ContainerNotFound { .. }) => {
            let rec = store.create_container_with_hostname(
                st.name.as_str(),
                image_id.as_str(),
                args.hostname.as_deref(),
            )?;
            st.created = true;
            st.exists = true;
            rec
        }
        Err(e) => return Err(e.into()),
    };
    let root = store.mount_container(rec.name.as_str())?;
    st.mounted = Some(root.clone());
    for v in &volumes {
        volume::prepare(&root, v, &mut st.made)?;
    }
    let image_cfg = image_config(store, &rec.image)?;
    let hostname = match &args.hostname {
        Some(h) => h.clone(),
        None => hostname_of(&root).unwrap_or_else(|| st.name.to_string()),
    };
    let opts = SpecOptions {
        command: args.command.clone(),
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        terminal: args.tty,
        host_network,
        volumes,
        hostname,
    };
    let spec = spec::build(&root, image_cfg.as_ref(), &opts)?;
    finish_root(&root, &spec, &opts.volumes)?;
    let dir =
        Path::new(STATE_ROOT)
            .join("bundles")
            .join(format!("{}.{}", st.name, std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create bundle {}", dir.display()))?;
    st.bundle = Some(dir.clone());
    write_config(&dir, &spec)?;
    Ok(dir)
}

/// The last steps before a bundle is written, once every check passed: the working
/// directory in the root and the volumes' host directories.
pub fn finish_root(
    root: &Path,
    spec: &oci_spec::runtime::Spec,
    volumes: &[Volume],
) -> Result<(), RunError> {
    if let Some(p) = spec.process() {
        volume::prepare_workdir(root, p.cwd(), volumes)?;
    }
    for v in volumes {
        volume::prepare_host(v)?;
    }
    Ok(())
}

/// The image's OCI config (`None` when it does not parse as one: no defaults).
pub fn image_config(
    store: &LayerStore,
    id: &layerstore::ImageId,
) -> anyhow::Result<Option<oci_spec::image::ImageConfiguration>> {
    let bytes = store.image_config(id)?;
    match serde_json::from_slice(&bytes) {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            tracing::warn!(image = %id, error = %e, "image config has no usable defaults");
            Ok(None)
        }
    }
}

/// The hostname in the root's `/etc/hostname` (a regular file, first line, valid).
pub fn hostname_of(root: &Path) -> Option<String> {
    let p = root.join("etc/hostname");
    if !std::fs::symlink_metadata(&p).ok()?.is_file() {
        return None;
    }
    let text = std::fs::read_to_string(p).ok()?;
    let h = text.lines().next()?.trim().to_owned();
    layerstore::initlayer::validate_hostname(&h).ok().map(|_| h)
}

/// Writes `dir/config.json` (temp name, then renamed).
pub fn write_config(dir: &Path, spec: &oci_spec::runtime::Spec) -> anyhow::Result<()> {
    let tmp = dir.join(".config.json.tmp");
    let path = dir.join("config.json");
    let json = serde_json::to_vec_pretty(spec).context("serialize runtime config")?;
    std::fs::write(&tmp, json).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// Undoes what `st` records: mount points, mount reference, bundle; removes the
/// container when `remove`. Every step is tried; the first error is returned.
fn cleanup(cfg: &Settings, st: &RunState, remove: bool) -> anyhow::Result<()> {
    let mut first: Option<anyhow::Error> = None;
    let mut keep = |r: anyhow::Result<()>| {
        if let Err(e) = r {
            tracing::debug!(error = %e, "cleanup step failed");
            first.get_or_insert(e);
        }
    };
    if let Some(b) = &st.bundle {
        keep(std::fs::remove_dir_all(b).with_context(|| format!("remove bundle {}", b.display())));
    }
    if st.mounted.is_none() && !remove {
        return first.map_or(Ok(()), Err);
    }
    let store = match open_store(cfg, LockMode::Exclusive) {
        Ok(s) => s,
        Err(e) => return Err(first.unwrap_or(e)),
    };
    if let Some(root) = &st.mounted {
        volume::remove_made(root, &st.made);
        keep(
            store
                .unmount_container(st.name.as_str())
                .map(|_| ())
                .map_err(Into::into),
        );
    }
    if remove {
        keep(
            store
                .remove_container(st.name.as_str(), false)
                .map(|_| ())
                .map_err(Into::into),
        );
    }
    first.map_or(Ok(()), Err)
}
