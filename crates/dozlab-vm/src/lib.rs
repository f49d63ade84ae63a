//! `dozlab vm run|status`: boot and supervise the session's microVM.

pub mod cli;
