//! Every random draw of the trainer and of its test sources is a pure function of integer keys
//! (seed, step, sample, view, ...), never of hidden global state, so a resumed run draws exactly
//! what an uninterrupted run would have. The generator is the augment crate's (the loader's plans
//! use the same one).

pub(crate) use regioncl_augment::KeyedRng;
