//! Fixtures shared by the CLI test files (each includes this with `mod common;`).

pub mod podnet;
