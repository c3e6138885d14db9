//! Change detection between a layer's tree and its parent's tree, and export of a list
//! of changes as an OCI tar. OWNER: helper "vfs".
