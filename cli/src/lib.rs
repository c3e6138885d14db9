//! layerctl CLI. OWNER: helper "store".
pub fn main_entry() -> i32 {
    0
}
