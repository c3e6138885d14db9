//! `layerctl export CONTAINER|IMAGE -o FILE|-`: the flat root filesystem tar (docker
//! export; no whiteouts) of a container (checked first) or an image. A FILE is written
//! next to itself under a temporary name, fsynced and renamed into place, so a failed
//! export leaves no partial FILE; a FILE that is a symlink is followed (its target is
//! replaced, the link stays). An existing FILE that is no regular file (`/dev/null`,
//! `/dev/stdout`, a FIFO) is written in place, as tar does: a rename would replace the
//! device node or pipe itself. Prints nothing on stdout unless `-o -`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use layerstore::LockMode;

use crate::config::Settings;
use crate::open::open_store;

pub fn run(cfg: &Settings, target: &str, output: &str) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    if output == "-" {
        let out = BufWriter::with_capacity(256 << 10, std::io::stdout().lock());
        let (_, mut out) = store.export_rootfs(target, out)?;
        out.flush().context("flush standard output")?;
        return Ok(());
    }
    let mut dest = PathBuf::from(output);
    match std::fs::metadata(&dest) {
        Ok(md) if md.is_dir() => anyhow::bail!("output {}: is a directory", dest.display()),
        Ok(md) if !md.is_file() => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&dest)
                .with_context(|| format!("open {}", dest.display()))?;
            let (_, out) = store.export_rootfs(target, BufWriter::with_capacity(256 << 10, f))?;
            out.into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("write {}", dest.display()))?;
            return Ok(());
        }
        Ok(_) => {
            dest = std::fs::canonicalize(&dest)
                .with_context(|| format!("resolve {}", dest.display()))?;
        }
        Err(_) => {}
    }
    let dest = dest.as_path();
    let name = dest
        .file_name()
        .with_context(|| format!("output {output:?} names no file"))?;
    let tmp = dest.with_file_name(format!(
        ".{}.layerctl-{}",
        name.to_string_lossy(),
        driver_core::id::random_hex(6)
    ));
    let result = (|| -> anyhow::Result<()> {
        let f = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        let (_, out) = store.export_rootfs(target, BufWriter::with_capacity(256 << 10, f))?;
        let f = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("write {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", tmp.display()))?;
        std::fs::rename(&tmp, dest)
            .with_context(|| format!("rename {} to {}", tmp.display(), dest.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
