//! Shard files: the byte layout ([`format`](mod@format)), reading ([`Shard`](crate::Shard)) and
//! writing ([`ShardWriter`](crate::ShardWriter)).

pub mod format;
pub(crate) mod reader;
pub(crate) mod writer;
