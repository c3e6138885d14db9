//! overlay2 driver. OWNER: helper "overlay2".
