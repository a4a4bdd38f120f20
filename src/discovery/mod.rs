//! Discovery primitives shared by the agent and the controller.

pub mod announce;
pub mod range;

pub use range::{is_this_host, parse_targets, ProbeTarget, ProbeTargets, RangeError};
