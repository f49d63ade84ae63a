//! The rootfs manager: `dozlab image build|cached|verify|serve`.
//!
//! - [`recipe`]: declarative TOML recipes (built-in `minimal`, `vm`, `k8s`).
//! - [`build`]: mmdebstrap → `mkfs.ext4 -d` → zstd → manifest.json, atomically.
//! - [`cache`]: builds keyed by recipe content, shared safely between callers
//!   ([`ensure_cached`] is what `dozlab up` and the test scripts use).

pub mod build;
pub mod cache;
pub mod cli;
pub mod customize;
pub mod fetch;
pub mod host;
pub mod recipe;
pub mod serve;
pub mod tree;
pub mod verify;

pub use cache::{CacheError, ensure_cached};
