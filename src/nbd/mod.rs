//! NBD protocol codec (placeholder).
