//! Operations on many rows at once, for callers outside workflows (clients, operators).

use super::{NewMessage, Operation};

/// Send several messages in one transaction (DBOS's `send_bulk`): all are inserted, or none
/// when a destination does not exist — answered as `Some(that destination)`, with nothing
/// written. Each insert that finds its `message_uuid` already present is skipped.
///
/// Retry safety: the uuids are chosen before the first attempt, so a re-run after a commit
/// that succeeded unseen inserts nothing more and answers `None`.
#[derive(Debug, Clone)]
pub(crate) struct SendMessages {
    pub messages: Vec<NewMessage>,
}

impl Operation for SendMessages {
    /// The first destination that does not exist, if any (then nothing was sent).
    type Output = Option<String>;
    fn describe(&self) -> String {
        format!("sending {} messages", self.messages.len())
    }
}
