//! Live membership: who is in the cluster and in what state.

mod actor;
pub mod round_trips;
pub mod row;
pub mod table;

pub use crate::probe::NodeFacts;
pub use actor::{
    member_json, silent_json, MembershipHandle, MembershipMsg, PublishedEvent, NO_REPLY,
};
pub use row::MemberRow;
pub use table::{
    Announced, EventKind, Kind, Member, MemberEvent, MemberState, MemberTable, Source,
};

/// A member to send to: its name and control endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub endpoint: String,
}

impl MembershipHandle {
    /// The alive members, as targets of a fan-out.
    pub fn alive_targets(&self) -> Vec<Target> {
        self.shared_members()
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| Target {
                name: m.name.clone(),
                endpoint: m.endpoint.clone(),
            })
            .collect()
    }
}
