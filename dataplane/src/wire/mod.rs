//! Checked views over raw frames.
