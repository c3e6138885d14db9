//! `layerctl export CONTAINER|IMAGE -o FILE|-`: the flat root filesystem tar (docker
//! export; no whiteouts) of a container (checked first) or an image. FILE is written as
//! `super::output_file` says: no partial FILE after a failure; a symlink is followed; a
//! device or FIFO (`/dev/null`) is written in place. Prints nothing on stdout unless `-o -`.

use layerstore::LockMode;

use crate::config::Settings;
use crate::open::open_store;

pub fn run(cfg: &Settings, target: &str, output: &str) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    super::output_file::write_output(output, "export", |w| {
        store.export_rootfs(target, w)?;
        Ok(())
    })
}
