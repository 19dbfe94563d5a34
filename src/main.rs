//! hivehost binary.
fn main() {}
