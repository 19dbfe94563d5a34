//! hivehost library.
