//! placeholder: filled by the serve_deputy work
