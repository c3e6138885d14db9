//! `layerctl save IMAGE... -o FILE|- [--compress gzip|zstd]`: one archive that is both an
//! OCI image layout and a docker-save archive (Docker 25+ form; see `layerstore::save`).
//! Each layer is verified against its DiffID while it streams: a layer changed on disk
//! stops the save (exit 5, the message names the layer and the entry). FILE is written as
//! `super::output_file` says (no partial FILE after a failure; a device, a FIFO or a
//! symlink keeps its node). Prints nothing on stdout unless `-o -`.

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
    super::output_file::write_output(output, "save", |w| {
        store.save(images, &opts, w)?;
        Ok(())
    })
}
