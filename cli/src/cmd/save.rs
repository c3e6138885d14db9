//! `layerctl save IMAGE... -o FILE|- [--compress gzip|zstd]`: one archive that is both an
//! OCI image layout and a docker-save archive (Docker 25+ form; see `layerstore::save`).
//! Each layer is verified against its DiffID while it streams: a layer changed on disk
//! stops the save (exit 5, the message names the layer and the entry). A FILE is written
//! next to itself under a temporary name, fsynced and renamed into place, so a failed
//! save leaves no partial FILE. Prints nothing on stdout unless `-o -`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use layerstore::{LockMode, SaveCompression, SaveOptions};

use crate::config::Settings;
use crate::open::open_store;

/// `--compress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compress {
    /// gzip, `application/vnd.oci.image.layer.v1.tar+gzip`.
    Gzip,
    /// zstd, `application/vnd.oci.image.layer.v1.tar+zstd`.
    Zstd,
}

pub fn run(
    cfg: &Settings,
    images: &[String],
    output: &str,
    compress: Option<Compress>,
) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Shared)?;
    let opts = SaveOptions {
        compress: compress.map(|c| match c {
            Compress::Gzip => SaveCompression::Gzip,
            Compress::Zstd => SaveCompression::Zstd,
        }),
    };
    if output == "-" {
        let out = BufWriter::with_capacity(256 << 10, std::io::stdout().lock());
        let (_, mut out) = store.save(images, &opts, out)?;
        out.flush().context("flush standard output")?;
        return Ok(());
    }
    let dest = Path::new(output);
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
        let (_, out) = store.save(images, &opts, BufWriter::with_capacity(256 << 10, f))?;
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
        if let Err(e) = std::fs::remove_file(&tmp) {
            tracing::warn!(path = %tmp.display(), error = %e, "removing the partial save failed");
        }
    }
    result
}
