//! `dozlab classroom render` and `dozlab session values`.

pub mod cli;
