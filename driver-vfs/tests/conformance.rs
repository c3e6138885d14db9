//! The shared driver conformance suite, run against vfs.

use driver_vfs::VfsDriver;

driver_core::conformance_tests!(|home| Box::new(
    VfsDriver::new(home, &Default::default()).unwrap()
));
