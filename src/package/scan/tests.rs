//! Tests of the scanner.
