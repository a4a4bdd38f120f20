//! Live membership: who is in the cluster and in what state.

mod actor;
pub mod round_trips;
pub mod table;

pub use actor::{
    member_json, silent_json, MembershipHandle, MembershipMsg, PublishedEvent, NO_REPLY,
};
pub use table::{
    Announced, EventKind, Kind, Member, MemberEvent, MemberState, MemberTable, NodeFacts, Source,
};
