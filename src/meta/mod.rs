//! On-disk metadata formats (placeholder).
