//! Integration tests of the loader crate, one module per area.

mod center;
mod common;
mod convert;
mod convert_safety;
mod dataset;
mod shard;
mod sources;
