//! The rootfs manager: `dozlab image build|verify|serve`.

pub mod cli;
