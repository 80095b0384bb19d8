//! Wake-ups for durable waits: a waiter subscribes to a key (a message topic, an event, a
//! stream), checks the database, and sleeps until the key is announced.
//!
//! Announcements come from this process's own writes (at once, in memory) and from the
//! backend's change feed: Postgres LISTEN/NOTIFY, or SQLite's `data_version` check for other
//! processes. A fallback re-check covers a lost announcement; it is never the main path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// How long a waiter sleeps without any announcement before it checks the database anyway.
pub(crate) const FALLBACK_RECHECK: Duration = Duration::from_secs(5);

/// What is announced: a kind and `workflow_id::name` (DBOS's payload format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    /// A message to `destination::topic` (`dbos_notifications_channel`).
    Message,
    /// An event `workflow::key` (`dbos_workflow_events_channel`).
    Event,
    /// A stream write `workflow::key` (`dbos_streams_channel`).
    Stream,
    /// A workflow executing in this process stopped (`workflow::`): finished, or interrupted.
    /// Announced in this process only: no backend delivers it, so whoever waits on it for
    /// another process's workflow also looks at the database now and then.
    Outcome,
}

impl Channel {
    fn prefix(self) -> char {
        match self {
            Channel::Message => 'n',
            Channel::Event => 'e',
            Channel::Stream => 's',
            Channel::Outcome => 'o',
        }
    }

    /// The channel a Postgres notification arrived on.
    pub(crate) fn from_pg(name: &str) -> Option<Self> {
        match name {
            "dbos_notifications_channel" => Some(Channel::Message),
            "dbos_workflow_events_channel" => Some(Channel::Event),
            "dbos_streams_channel" => Some(Channel::Stream),
            _ => None,
        }
    }
}

fn key(channel: Channel, workflow_id: &str, name: &str) -> String {
    format!("{}:{workflow_id}::{name}", channel.prefix())
}

/// The waiters of this process, by key.
#[derive(Default)]
pub(crate) struct Notifier {
    keys: Mutex<HashMap<String, Arc<Notify>>>,
    /// Woken by "something changed" without a key (SQLite's change check, a reconnect).
    anything: Notify,
}

impl Notifier {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribe to `workflow_id::name` on `channel`.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        channel: Channel,
        workflow_id: &str,
        name: &str,
    ) -> Subscription {
        let key = key(channel, workflow_id, name);
        let notify = Arc::clone(self.keys().entry(key.clone()).or_default());
        Subscription {
            notifier: Arc::clone(self),
            key,
            notify,
        }
    }

    /// Announce `workflow_id::name` on `channel`.
    pub(crate) fn announce(&self, channel: Channel, workflow_id: &str, name: &str) {
        self.announce_payload(channel, &format!("{workflow_id}::{name}"));
    }

    /// Announce a raw `workflow_id::name` payload, as a backend delivers it.
    pub(crate) fn announce_payload(&self, channel: Channel, payload: &str) {
        let key = format!("{}:{payload}", channel.prefix());
        if let Some(notify) = self.keys().get(&key) {
            notify.notify_waiters();
        }
    }

    /// Wake every waiter (something changed, but the backend cannot say what).
    pub(crate) fn announce_all(&self) {
        self.anything.notify_waiters();
    }

    /// Completes at the next [`Notifier::announce_all`] after it is first polled.
    pub(crate) async fn changed(&self) {
        self.anything.notified().await;
    }
}

/// One waiter's interest in a key. Create the [`Subscription::notified`] future *before*
/// checking the database, so an announcement between the check and the wait is not lost.
pub(crate) struct Subscription {
    notifier: Arc<Notifier>,
    key: String,
    notify: Arc<Notify>,
}

impl Subscription {
    /// A future that completes at the next announcement of this key or an unspecific
    /// "something changed". Armed at once.
    pub(crate) fn notified(&self) -> impl Future<Output = ()> + '_ {
        let mut this_key = Box::pin(self.notify.notified());
        this_key.as_mut().enable();
        let mut anything = Box::pin(self.notifier.anything.notified());
        anything.as_mut().enable();
        async move {
            tokio::select! {
                _ = this_key => {}
                _ = anything => {}
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut keys = self.notifier.keys();
        // The map's own reference and ours: nobody else waits on this key.
        if Arc::strong_count(&self.notify) <= 2 {
            keys.remove(&self.key);
        }
    }
}
