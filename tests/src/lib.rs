//! Shared helpers for uvlan system tests.
