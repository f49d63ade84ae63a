//! Fixtures shared by the CLI test files (each includes this with `mod common;`).
// Each test file is its own crate and uses only some of these helpers.
#![allow(dead_code)]

pub mod podnet;
pub mod session;
