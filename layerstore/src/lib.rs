//! layer store. OWNER: helper "store".
