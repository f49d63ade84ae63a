//! `dozlab terminal`: the web terminal into the learner's VM.
//!
//! An axum server ([`web::app`]) serves an embedded xterm.js page, logs the
//! learner in with the session password, and bridges each WebSocket
//! ([`bridge`]) to a shell in the VM reached over SSH ([`ssh`]). Shells
//! ([`shell`]) outlive sockets and replay missed output on re-attach. Shells
//! can be recorded as asciicast v2 ([`record`]); files move over SFTP ([`files`]).
//! [`server`] accepts connections with timeouts and a cap; [`proxy`] decides
//! whose forwarding headers are believed; [`logsafe`] escapes what clients
//! wrote before it is logged.

pub mod auth;
pub mod bridge;
pub mod buffer;
pub mod cli;
pub mod logsafe;
pub mod protocol;
pub mod proxy;
pub mod ready;
pub mod record;
pub mod server;
pub mod shell;
pub mod ssh;
pub mod web;

mod assets;
pub mod files;
pub mod lab;
pub mod labsetup;

pub use dozlab_core::error_chain;
