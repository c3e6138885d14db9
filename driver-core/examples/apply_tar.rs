//! Applies a layer tar to a directory, for benchmarking against `tar -x`:
//! `cargo run --release -p driver-core --example apply_tar -- ROOT LAYER.tar [delete|overlay|aufs]`

use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;

use driver_core::{apply_tar, ApplyOptions, WhiteoutFormat};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let usage = "usage: apply_tar ROOT LAYER.tar [delete|overlay|aufs]";
    let root = PathBuf::from(args.next().ok_or(usage)?);
    let tar = PathBuf::from(args.next().ok_or(usage)?);
    let format = match args.next().as_ref().and_then(|s| s.to_str()) {
        None | Some("overlay") => WhiteoutFormat::Overlay,
        Some("delete") => WhiteoutFormat::Delete,
        Some("aufs") => WhiteoutFormat::Aufs,
        Some(_) => return Err(usage.into()),
    };
    std::fs::create_dir_all(&root)?;
    let mut f = File::open(&tar)?;
    let t = Instant::now();
    let stats = apply_tar(&root, &mut f, &ApplyOptions::new(format))?;
    eprintln!(
        "{} entries, {} content bytes in {:.3}s",
        stats.entries,
        stats.content_bytes,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
