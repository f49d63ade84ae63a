//! `dozlab init-rootfs`: fetch, verify and prepare a session's rootfs image.

pub mod cli;
