//! `layerctl bundle CONTAINER DIR [flags] [-- CMD ARG...]`: mounts the container (one
//! reference, released by `layerctl umount CONTAINER`) and writes an OCI runtime bundle
//! for any runtime: `DIR/config.json` whose `root.path` is the mounted root (absolute:
//! runc refuses a symlinked rootfs) and `DIR/rootfs`, a symlink to it for people.
//! The config is the one `run` would use (same flags; hostname from the container's
//! `/etc/hostname`). Volume mount points it has to make in the root stay there (a
//! bundle outlives this command). Prints DIR. On failure the mount reference is dropped.

use std::path::Path;

use anyhow::Context;
use layerstore::{ContainerName, LockMode};

use crate::cmd::run::{
    check_flags, finish_root, hostname_of, image_config, write_config, CheckedFlags, RunArgs,
};
use crate::config::Settings;
use crate::open::open_store;
use crate::output::path_line;
use crate::runtime::spec::{self, SpecOptions};
use crate::runtime::volume::{self, MadeDirs};

pub fn run(cfg: &Settings, container: &str, dir: &Path, args: &RunArgs) -> anyhow::Result<()> {
    let CheckedFlags {
        volumes,
        host_network: host_net,
        env,
    } = check_flags(args)?;
    let store = open_store(cfg, LockMode::Exclusive)?;
    let name = ContainerName::new(container)?;
    let rec = store.container(&name)?;
    let root = store.mount_container(name.as_str())?;
    let result = (|| -> anyhow::Result<()> {
        let mut made = MadeDirs::default();
        for v in &volumes {
            volume::prepare(&root, v, &mut made)?;
        }
        let image_cfg = image_config(&store, &rec.image)?;
        let opts = SpecOptions {
            command: args.command.clone(),
            env,
            workdir: args.workdir.clone(),
            user: args.user.clone(),
            terminal: args.tty,
            host_network: host_net,
            volumes,
            hostname: args
                .hostname
                .clone()
                .or_else(|| hostname_of(&root))
                .unwrap_or_else(|| name.to_string()),
        };
        let spec = spec::build(&root, image_cfg.as_ref(), &opts)?;
        finish_root(&root, &spec, &opts.volumes)?;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        write_config(dir, &spec)?;
        let link = dir.join("rootfs");
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(&root, &link)
                .with_context(|| format!("symlink {}", link.display()))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        if let Err(ue) = store.unmount_container(name.as_str()) {
            tracing::warn!(container = %name, error = %ue, "unmount after a failed bundle");
        }
        return Err(e);
    }
    let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    path_line(&shown)?;
    Ok(())
}
