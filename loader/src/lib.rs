//! Shards, orders, plans and the loader pipeline.
