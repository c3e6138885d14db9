//! Flat root filesystem tars (`docker export`), plain, gzip or zstd: one layer, and a
//! synthesized OCI image config (host os/arch, no creation time, so the image id is a
//! function of the tar's content only).

use std::fs::File;
use std::path::Path;

use oci_spec::image::{Arch, ImageConfigurationBuilder, Os, RootFsBuilder};

use super::{Ctx, ImportOptions, LayerInput};
use crate::error::{IoCtx, Result, StoreError};
use crate::ids::{DiffId, ImageId};
use crate::store::LayerStore;

/// The host's architecture in Go's GOARCH spelling.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The config of a one-layer image made from a flat tar.
pub(crate) fn synthesize_config(diff: &DiffId) -> Result<Vec<u8>> {
    let oci = |e: oci_spec::OciSpecError| StoreError::BadArchive {
        file: "synthesized image config".into(),
        reason: e.to_string(),
    };
    let cfg = ImageConfigurationBuilder::default()
        .architecture(Arch::from(host_arch()))
        .os(Os::Linux)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff.to_string()])
                .build()
                .map_err(oci)?,
        )
        .build()
        .map_err(oci)?;
    Ok(cfg.to_string().map_err(oci)?.into_bytes())
}

impl LayerStore {
    pub(crate) fn import_flat(
        &self,
        file: &Path,
        opts: &ImportOptions<'_>,
        ctx: &Ctx<'_>,
    ) -> Result<ImageId> {
        let f = File::open(file).ctx("open", file)?;
        let rec = self.import_layer(
            None,
            LayerInput {
                what: file.display().to_string(),
                reader: Box::new(f),
                blob: None,
                diff_id: None,
            },
            ctx,
        )?;
        let config = synthesize_config(&rec.diff_id)?;
        let names: Vec<String> = opts.name.iter().cloned().collect();
        self.register_image(file, &config, &names)
    }
}
