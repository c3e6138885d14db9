//! Builds an image of N read-only layers (layer k holds `layer<k>`) plus a container
//! layer on top, for benchmarks: `make_stack HOME TAG N`. Prints the container layer id.

use driver_core::{CreateOpts, Driver, LayerId};
use driver_overlay2::Overlay2Driver;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: make_stack HOME TAG N");
        std::process::exit(2);
    }
    let d = Overlay2Driver::new(std::path::Path::new(&args[1]), &Default::default())
        .expect("open driver");
    let n: usize = args[3].parse().expect("N");
    let mut parent: Option<LayerId> = None;
    for k in 0..n {
        let id = LayerId::new(format!("{}-{k}", args[2])).expect("id");
        d.create(&id, parent.as_ref(), &CreateOpts::default())
            .expect("create");
        std::fs::write(
            d.layer_dir(&id).unwrap().join(format!("layer{k}")),
            k.to_string(),
        )
        .expect("write");
        parent = Some(id);
    }
    let c = LayerId::new(format!("{}-ctr", args[2])).expect("id");
    d.create(&c, parent.as_ref(), &CreateOpts::read_write())
        .expect("create container layer");
    #[allow(clippy::print_stdout)]
    {
        println!("{c}");
    }
}
