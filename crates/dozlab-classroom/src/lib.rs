//! `dozlab classroom render` and `dozlab session values`: the files operators
//! feed to the `dozlab-session` Helm chart.
//!
//! - [`roster`] reads and validates a class roster (CSV), turning ids into
//!   valid Kubernetes names and reporting every bad line at once.
//! - [`classroom`] plans and writes one FluxCD `HelmRelease` per student, a
//!   `Secret` per student with a generated password (never in the
//!   HelmRelease) and a private credentials file, all or nothing.
//! - [`values`] writes a values file for one `helm install`.
//! - [`lab`] turns `--lab URL [--lab-sha256 HEX]` into the chart's `lab` values.
//! - [`names`], [`password`] and [`yaml`] are the small pieces they share.

pub mod classroom;
pub mod cli;
pub mod lab;
pub mod names;
pub mod password;
pub mod roster;
pub mod values;
pub mod yaml;
