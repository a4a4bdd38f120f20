//! placeholder: filled by the configure_injection work
