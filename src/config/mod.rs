//! The DRBD `.res` grammar (placeholder until the parser lands).
pub mod model;
pub use model::*;
