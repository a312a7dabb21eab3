//! One module per subcommand.

pub mod convert;
pub mod env;
pub mod inspect;
pub mod train;
