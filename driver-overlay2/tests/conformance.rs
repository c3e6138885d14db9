//! The shared driver conformance suite, run against overlay2 (real mounts, root).

use driver_overlay2::Overlay2Driver;

driver_core::conformance_tests!(|home| Box::new(
    Overlay2Driver::new(home, &Default::default()).unwrap()
));
