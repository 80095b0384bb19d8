#![forbid(unsafe_code)]
//! Cairn: durable workflows for Rust (crate docs come with the engine).

mod error;
pub(crate) mod store;

pub use error::{Error, PortableError, Result};
