//! Live membership: who is in the cluster and in what state.

pub mod table;

pub use table::{
    EventKind, Kind, Member, MemberEvent, MemberState, MemberTable, NodeFacts, Source,
};
