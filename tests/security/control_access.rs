//! placeholder: filled by the control_access work
