//! troupe's controller: discovery, membership, and the `troupe` CLI built on them.

pub mod membership;
