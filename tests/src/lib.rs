//! Harness: see lab.rs
