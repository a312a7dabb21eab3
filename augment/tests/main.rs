//! Integration tests of regioncl-augment on real photos, against torchvision 0.26.
//!
//! Needs the project's data (`make data`: env `REGIONCL_DATA`, default `<workspace>/.cache/data`)
//! and the venv with torchvision (`make venv`: env `REGIONCL_PYTHON`, default
//! `<workspace>/.venv/bin/python`). Missing either is a failure, never a silent skip.

#[path = "main/common.rs"]
mod common;

#[path = "main/color.rs"]
mod color;
#[path = "main/decode.rs"]
mod decode;
#[path = "main/pipeline.rs"]
mod pipeline;
#[path = "main/resize.rs"]
mod resize;
