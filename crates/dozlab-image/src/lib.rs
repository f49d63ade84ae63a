//! The rootfs manager: `dozlab image build|cached|verify|serve|recipe`.
//!
//! - [`recipe`]: declarative TOML recipes (built-in `minimal`, `vm`, `k8s`,
//!   embedded from `profiles/`), `extends`, content hash.
//! - [`build`]: mmdebstrap → `mkfs.ext4 -d` → zstd → manifest.json, in a
//!   staging directory renamed into place; [`customize`] is the base
//!   configuration every image gets; [`fetch`] provides sha256-pinned files;
//!   [`tree`] reads facts from the built tree; [`host`] checks tools and root,
//!   runs them, prints phases and handles interrupts.
//! - [`cache`]: builds keyed by recipe content, shared safely between callers
//!   ([`ensure_cached`] is what `dozlab up` and `scripts/test-image` use).
//! - [`kernel`]: the Dozlab microVM kernel (`kernel = "dozlab"` recipes),
//!   built from Debian's `linux-source-6.1`, cached by config hash.
//! - [`verify`]: offline checks of an ext4 image (ext4-view, no mount, no root).
//! - [`serve`]: HTTP with Range and an `index.json` catalog.

pub mod build;
pub mod cache;
pub mod cli;
pub mod customize;
pub mod fetch;
pub mod host;
pub mod kernel;
pub mod recipe;
pub mod serve;
pub mod tree;
pub mod verify;

pub use cache::{CacheError, ensure_cached};
