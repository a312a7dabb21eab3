//! Integration tests of the loader crate, one module per area.

mod common;
mod convert;
mod dataset;
mod shard;
