//! Labs in the open Killercoda scenario format (`index.json` + Markdown +
//! shell scripts): the model ([`Lab`]), validation, Markdown rendered to
//! sanitised HTML with clickable actions ([`LabView`]), and the runner that
//! checks steps in a session's VM over SSH (`Check`, `dozlab lab test`).
//! See `docs/labs.md`.

pub mod assets;
pub mod fetch;
pub mod image;
pub mod index;
pub mod install;
pub mod markdown;
pub mod model;
pub mod problem;
pub mod script;
pub mod validate;
pub mod view;

pub use index::{LoadError, load};
pub use model::{Lab, Page, PageId};
pub use problem::{Problem, Severity};
pub use view::LabView;
pub mod cli;
pub mod labtest;
pub mod remote;
pub mod runner;
pub mod session;
pub mod unpack;
