//! The userspace aufs server (see `driver_aufs::server`).

fn main() {
    std::process::exit(driver_aufs::server::main_with_args(
        std::env::args_os().skip(1),
    ));
}
