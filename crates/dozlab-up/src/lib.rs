//! `dozlab up|down|ls|logs`: a lab session on one machine.

pub mod cli;
