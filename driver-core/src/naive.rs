//! Naive diff/changes/diff_size that work for any driver by mounting and comparing
//! trees. OWNER: helper "vfs".
