//! Wall and CPU time of `mount` alone (the unmount is outside the timing), to separate
//! the driver's cost from waiting on a loaded machine:
//! `mount_timing HOME LAYER [ITERATIONS]`.

use std::time::{Duration, Instant};

use driver_core::{Driver, LayerId, MountOpts};
use driver_overlay2::Overlay2Driver;

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let d =
        Overlay2Driver::new(std::path::Path::new(&args[1]), &Default::default()).expect("driver");
    let id = LayerId::new(args[2].as_str()).expect("id");
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(200);
    let (mut wall, mut cpu) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let (t, c) = (Instant::now(), thread_cpu());
        d.mount(&id, &MountOpts::default()).expect("mount");
        wall.push(t.elapsed());
        cpu.push(thread_cpu() - c);
        d.unmount(&id).expect("unmount");
    }
    wall.sort();
    cpu.sort();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "mount {id}: wall median {:?} p10 {:?} p90 {:?}; cpu (user+sys) median {:?}",
            wall[n / 2],
            wall[n / 10],
            wall[n * 9 / 10],
            cpu[n / 2]
        );
    }
}
