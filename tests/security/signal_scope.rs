//! placeholder: filled by the signal_scope work
