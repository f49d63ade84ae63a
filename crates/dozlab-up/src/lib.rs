//! `dozlab up|down|ls|logs`: a whole lab session on one machine, without
//! Kubernetes. A per-session supervisor runs the pod's components as child
//! processes inside a network namespace of the session's own and publishes
//! the terminal, SSH and Docker on the host's loopback. See `docs/up.md`.

pub mod checks;
pub mod child;
pub mod cli;
pub mod ctx;
pub mod hostnft;
pub mod http;
pub mod image;
pub mod images;
pub mod lab;
pub mod launch;
pub mod link;
pub mod netns;
pub mod phases;
pub mod pod;
pub mod ports;
pub mod procs;
pub mod proxy;
pub mod report;
pub mod state;
pub mod supervisor;
pub mod teardown;
