//! Wall time of mount + unmount of one layer, repeated: `mount_cycle HOME LAYER
//! [ITERATIONS] [HOLD]`. With HOLD (another layer id), HOLD stays mounted during the
//! runs, so internal mounts of a deep stack that both share are already there (a second
//! container of the same image). Prints median, p10 and p90.
//!
//! Stacks come from `make_stack HOME TAG N` (N read-only layers and a container layer).

use std::time::{Duration, Instant};

use driver_core::{Driver, LayerId, MountOpts};
use driver_overlay2::Overlay2Driver;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: mount_cycle HOME LAYER [ITERATIONS] [HOLD]");
        std::process::exit(2);
    }
    let d =
        Overlay2Driver::new(std::path::Path::new(&args[1]), &Default::default()).expect("driver");
    let id = LayerId::new(args[2].as_str()).expect("id");
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(50);
    let hold = args
        .get(4)
        .map(|s| LayerId::new(s.as_str()).expect("hold id"));
    if let Some(h) = &hold {
        d.mount(h, &MountOpts::default()).expect("mount HOLD");
    }
    // One untimed round (page cache, dentries).
    d.mount(&id, &MountOpts::default()).expect("mount");
    d.unmount(&id).expect("unmount");
    let mut wall: Vec<Duration> = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        d.mount(&id, &MountOpts::default()).expect("mount");
        d.unmount(&id).expect("unmount");
        wall.push(t.elapsed());
    }
    if let Some(h) = &hold {
        d.unmount(h).expect("unmount HOLD");
    }
    wall.sort();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "mount+umount {id}: median {:.2} ms, p10 {:.2} ms, p90 {:.2} ms ({n} runs)",
            wall[n / 2].as_secs_f64() * 1e3,
            wall[n / 10].as_secs_f64() * 1e3,
            wall[n * 9 / 10].as_secs_f64() * 1e3,
        );
    }
}
