//! One module per subcommand.

pub mod convert;
pub mod env;
pub mod inspect;
