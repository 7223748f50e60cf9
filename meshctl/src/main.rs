//! meshctl: STUB being written.
fn main() {}
