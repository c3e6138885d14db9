//! [`Driver::layers`] and [`Driver::leftovers`]: the driver alone names what its tree
//! holds, so `layerctl check` works for any driver without knowing its folders.

use super::{lid, Factory, Harness, TarBuilder};
use crate::driver::{CreateOpts, Driver};

/// Layers are listed sorted, read-only and read-write alike, and a removed layer is
/// gone from the list; a clean tree has no leftovers.
pub fn layers_and_leftovers(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d: &dyn Driver = h.d();
    assert!(d.layers().unwrap().is_empty());
    let tar = TarBuilder::new().file("f", b"f", 0o644).finish();
    h.create_applied(&lid("b-base"), None, &tar);
    h.create_rw(&lid("c-init"), Some(&lid("b-base")));
    h.create_rw(&lid("a-rw"), Some(&lid("c-init")));
    d.create(&lid("d-empty"), None, &CreateOpts::default())
        .unwrap();
    assert_eq!(
        d.layers().unwrap(),
        [lid("a-rw"), lid("b-base"), lid("c-init"), lid("d-empty")]
    );
    assert_eq!(d.leftovers().unwrap(), Vec::<std::path::PathBuf>::new());
    d.remove(&lid("a-rw")).unwrap();
    d.remove(&lid("d-empty")).unwrap();
    assert_eq!(d.layers().unwrap(), [lid("b-base"), lid("c-init")]);
    assert!(d.leftovers().unwrap().is_empty(), "remove leaves nothing");
}
