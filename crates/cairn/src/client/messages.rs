//! Messages to many workflows at once, and stream reads from an offset with a timeout.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::Serialize;

use super::Client;
use crate::engine::comm::{self, SendOptions};
use crate::engine::notify::Channel;
use crate::engine::step::StepCall;
use crate::error::{Error, Result};
use crate::store::SendMessages;

/// One message of [`Client::send_many`]: a destination workflow, a topic (or none), a value
/// and optionally an idempotency key. The value is serialized when the message is built; a
/// value that cannot be is reported by `send_many`, before anything is sent.
#[derive(Debug)]
#[must_use = "a message does nothing until given to Client::send_many"]
pub struct Message {
    destination: String,
    topic: Option<String>,
    /// The value as JSON, or why it could not be serialized.
    value: std::result::Result<serde_json::Value, String>,
    idempotency_key: Option<String>,
}

impl Message {
    /// A message with `value` for workflow `destination` on `topic` (`None`: no topic, which
    /// [`crate::recv`]`(None, ..)` receives).
    pub fn new<T: Serialize + ?Sized>(destination: &str, topic: Option<&str>, value: &T) -> Self {
        Self {
            destination: destination.to_owned(),
            topic: topic.map(str::to_owned),
            value: serde_json::to_value(value).map_err(|e| e.to_string()),
            idempotency_key: None,
        }
    }

    /// Sending a message with the same key to the same destination again is a no-op.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// How [`Client::read_stream_with`] reads.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ReadStreamOptions {
    offset: u64,
    timeout: Option<Duration>,
}

impl ReadStreamOptions {
    /// Start at this offset (the first value is at 0) instead of the start of the stream.
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// How long to wait for each value: when none comes in time, the stream yields
    /// [`Error::StreamTimedOut`] and ends. Default: wait as long as the writer may write.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl Client {
    /// Send several messages in one transaction (DBOS's `send_bulk`): all are sent, or — when
    /// a destination does not exist ([`Error::NotFound`]) or a value cannot be serialized —
    /// none. Inside a workflow the call is a step (`DBOS.send_bulk`) whose messages get
    /// idempotency keys from the workflow and step, so a replay sends nothing twice.
    pub fn send_many(
        &self,
        messages: Vec<Message>,
    ) -> impl Future<Output = Result<()>> + Send + use<> {
        let rt = Arc::clone(&self.rt);
        let call = StepCall::begin("DBOS.send_bulk");
        async move {
            call.run(Some(std::convert::identity), async move {
                // Inside a step: keys that make a re-run of this step a no-op.
                let step_key = match (crate::workflow_id(), crate::step_id()) {
                    (Some(workflow), Some(step)) => Some(format!("{workflow}-{step}")),
                    _ => None,
                };
                let mut prepared = Vec::with_capacity(messages.len());
                for (n, message) in messages.into_iter().enumerate() {
                    let value = message.value.map_err(|reason| Error::InvalidArgument {
                        argument: "messages",
                        reason: format!(
                            "the message to {} cannot be serialized: {reason}",
                            message.destination
                        ),
                    })?;
                    let key = message
                        .idempotency_key
                        .or_else(|| step_key.as_ref().map(|k| format!("{k}-{n}")));
                    let options = key.map(SendOptions::idempotency_key).unwrap_or_default();
                    prepared.push(comm::prepare_send(
                        &message.destination,
                        message.topic.as_deref(),
                        &value,
                        options,
                    )?);
                }
                let announce: Vec<(String, String)> = prepared
                    .iter()
                    .map(|m| (m.destination_id.clone(), m.topic.clone()))
                    .collect();
                if let Some(missing) = rt.store.run(SendMessages { messages: prepared }).await? {
                    return Err(Error::NotFound(missing));
                }
                for (destination, topic) in announce {
                    rt.notifier.announce(Channel::Message, &destination, &topic);
                }
                Ok(())
            })
            .await
        }
    }

    /// [`Client::read_stream`] from an offset, with a per-value timeout (DBOS's
    /// `read_stream(offset=, timeout_seconds=)`).
    pub fn read_stream_with<T>(
        &self,
        workflow_id: &str,
        key: &str,
        options: ReadStreamOptions,
    ) -> impl Stream<Item = Result<T>> + Send + 'static
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let values = comm::read_stream(Arc::clone(&self.rt), workflow_id, key, options.offset);
        let Some(timeout) = options.timeout else {
            return values.left_stream();
        };
        let (workflow_id, key) = (workflow_id.to_owned(), key.to_owned());
        // (stream, next offset, ended)
        let state = (Box::pin(values), options.offset, false);
        futures::stream::unfold(state, move |(mut values, offset, ended)| {
            let (workflow_id, key) = (workflow_id.clone(), key.clone());
            async move {
                if ended {
                    return None;
                }
                match tokio::time::timeout(timeout, values.next()).await {
                    Ok(Some(item)) => Some((item, (values, offset + 1, false))),
                    Ok(None) => None,
                    Err(_) => {
                        let error = Error::StreamTimedOut {
                            workflow_id,
                            key,
                            offset,
                            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                        };
                        Some((Err(error), (values, offset, true)))
                    }
                }
            }
        })
        .right_stream()
    }
}
