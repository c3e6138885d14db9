//! A tiny stand-in for `layerctl mount`/`umount` on the driver alone, for whole-process
//! timing: `mount_once HOME LAYER mount|umount|count`. Prints the mount path on mount.

use driver_core::{Driver, LayerId, MountOpts};
use driver_overlay2::Overlay2Driver;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: mount_once HOME LAYER mount|umount|count");
        std::process::exit(2);
    }
    let d = match Overlay2Driver::new(std::path::Path::new(&args[1]), &Default::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mount_once: {e}");
            std::process::exit(1);
        }
    };
    let id = LayerId::new(args[2].as_str()).expect("layer id");
    let r = match args[3].as_str() {
        "mount" => d.mount(&id, &MountOpts::default()).map(|p| {
            #[allow(clippy::print_stdout)]
            {
                println!("{}", p.display());
            }
        }),
        "umount" => d.unmount(&id),
        "count" => d.mount_count(&id).map(|n| {
            #[allow(clippy::print_stdout)]
            {
                println!("{n}");
            }
        }),
        other => {
            eprintln!("unknown action {other}");
            std::process::exit(2);
        }
    };
    if let Err(e) = r {
        eprintln!("mount_once: {e}");
        std::process::exit(1);
    }
}
