//! `dozlab up|down|ls|logs`: a whole lab session on one machine, without
//! Kubernetes. A per-session supervisor runs the pod's components as child
//! processes inside a network namespace of the session's own and publishes
//! the terminal, SSH and Docker on the host's loopback. See `docs/up.md`.

pub mod child;
pub mod cli;
pub mod hostnft;
pub mod link;
pub mod netns;
pub mod procs;
pub mod proxy;
pub mod state;
