//! Image operations for self-supervised pretraining.
