//! `dozlab init-rootfs`: fetch, verify and prepare a session's rootfs image.
//!
//! One pass over the bytes: they are hashed as they stream in
//! ([`pipeline`]), decompressed when the magic bytes say so ([`decode`]) and
//! written sparsely ([`sparse`]) to a temporary file beside the target
//! ([`temp`]). HTTP downloads resume and retry ([`http`], [`retry`]); a
//! node-level cache keyed by sha256 shares downloads between sessions
//! ([`cache`]). After verification, `e2fsck` and `resize2fs` prepare the
//! filesystem ([`ext`]) and the file is renamed into place.
//!
//! [`fetch`] is the library entry point; [`cli`] is a thin layer over it, and
//! `dozlab up` calls it for URL images (with the node cache under
//! `$DOZLAB_CACHE/downloads`) and [`copy_local`] for images already on the
//! machine. Dropping the future of either cancels it and removes the
//! temporary file.

pub mod cache;
mod cached;
pub mod cli;
pub mod copy;
pub mod decode;
mod download;
pub mod error;
pub mod ext;
pub mod http;
mod local;
pub mod options;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod retry;
mod run;
pub mod source;
pub mod space;
pub mod sparse;
pub mod temp;
pub mod testing;

pub use decode::Compression;
pub use error::{ErrorKind, FetchError};
pub use ext::Grow;
pub use local::copy_local;
pub use options::{CacheUse, FetchOptions, FetchReport, Phases};
pub use progress::ProgressMode;
pub use run::fetch;
