//! Cross-crate and command-line tests on real photos (`make data` fetches them), one module per
//! area.

mod cli;
mod compare;
mod convert;
mod convert_safety;
mod demo;
mod dist;
mod dist_train;
mod elastic;
mod eval;
mod export;
mod inspect;
mod plot;
mod timm;
mod train;
