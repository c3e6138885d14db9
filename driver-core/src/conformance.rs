//! The shared driver conformance suite (moby graphtest). OWNER: helper "vfs".
