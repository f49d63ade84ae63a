//! `dozlab terminal`: the web terminal into the learner's VM.

pub mod cli;
