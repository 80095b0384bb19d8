//! The durable engine: contexts, steps, workflows, recovery. It speaks to the store only
//! through the `SystemDatabase` operations and never writes SQL.

pub(crate) mod comm;
pub(crate) mod context;
pub(crate) mod control;
pub(crate) mod convert;
pub(crate) mod debounce;
pub(crate) mod dispatch;
pub(crate) mod enqueue;
pub(crate) mod evict;
pub(crate) mod notify;
pub(crate) mod queue;
pub(crate) mod recovery;
pub(crate) mod registry;
pub(crate) mod runtime;
pub(crate) mod schedule;
pub(crate) mod state;
pub(crate) mod step;
pub(crate) mod takeover;
pub(crate) mod timer;
pub(crate) mod watchdog;
pub(crate) mod workflow;
