//! vfs driver. OWNER: helper "vfs".
