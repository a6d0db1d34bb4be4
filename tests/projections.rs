//! Projections on both backends.
