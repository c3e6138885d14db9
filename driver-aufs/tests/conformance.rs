//! The shared driver conformance suite, run against aufs with the userspace backend:
//! real FUSE mounts served by the `layerctl-aufs-server` binary in its own process.

use driver_aufs::options::ServerCommand;
use driver_aufs::AufsDriver;

fn userspace(home: &std::path::Path) -> AufsDriver {
    let opts = [("mode".to_owned(), "userspace".to_owned())]
        .into_iter()
        .collect();
    let server = ServerCommand {
        program: env!("CARGO_BIN_EXE_layerctl-aufs-server").into(),
        args: Vec::new(),
    };
    AufsDriver::with_server(home, &opts, Some(server)).expect("open aufs driver")
}

driver_core::conformance_tests!(|home| Box::new(userspace(home)));
