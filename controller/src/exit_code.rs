//! The exit codes of every `troupe` command, as README documents them.

/// Every node answered ok.
pub const EXIT_OK: u8 = 0;
/// Some node failed or did not reply.
pub const EXIT_NODE_FAILED: u8 = 1;
/// A usage or config error, or a question not answered yes.
pub const EXIT_USAGE: u8 = 2;
/// No node matched the selection, or none was reached.
pub const EXIT_NOTHING_MATCHED: u8 = 3;
