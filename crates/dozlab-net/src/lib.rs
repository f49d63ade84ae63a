//! `dozlab network-setup`: tap device, NAT and port forwarding for the VM.

pub mod cli;
