//! Shared helpers for corelog's criterion benches.
