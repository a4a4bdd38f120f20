//! placeholder: filled by the bounds work
