//! Copies a tree the way a vfs child layer is made: `copy_tree SRC DST` (DST must not
//! exist). For side-by-side timing against `cp -a SRC DST`.

fn main() {
    let args: Vec<std::path::PathBuf> = std::env::args_os().skip(1).map(Into::into).collect();
    let [src, dst] = args.as_slice() else {
        eprintln!("usage: copy_tree SRC DST");
        std::process::exit(2);
    };
    if let Err(e) = driver_vfs::copy_tree(src, dst) {
        eprintln!("copy_tree: {e}");
        std::process::exit(1);
    }
}
