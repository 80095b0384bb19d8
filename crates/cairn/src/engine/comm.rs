//! Communication between workflows: messages (`send`/`recv`), events (`set_event`/
//! `get_event`) and streams (`write_stream`/`close_stream`/`read_stream`).
//!
//! Every write made by a workflow commits with its checkpoint, so a replay neither repeats
//! nor loses it. Waits are woken by announcements (see `notify`), with a durable deadline.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::context::{WorkflowContext, current_step, halting};
use super::evict::{self, Look};
use super::notify::{Channel, FALLBACK_RECHECK, Subscription};
use super::runtime::{Runtime, now_ms};
use super::timer::{durable_deadline, until};
use super::workflow::check_key;
use crate::error::{Error, Result};
use crate::serialization;
use crate::status::WorkflowState;
use crate::store::{
    ConsumeMessage, GetEvent, GetWorkflow, ListEvents, NULL_TOPIC, NewMessage, PeekMessage,
    ReadStream, RecordOutcome, RecordStep, SendMessage, SetEvent, SetEventFromStep, Stored,
    WriteStream, WriteStreamFromStep,
};

const SEND: &str = "DBOS.send";
const RECV: &str = "DBOS.recv";
const SET_EVENT: &str = "DBOS.setEvent";
const GET_EVENT: &str = "DBOS.getEvent";
const WRITE_STREAM: &str = "DBOS.writeStream";
const CLOSE_STREAM: &str = "DBOS.closeStream";

/// Where a message is read from, as named in a decode error.
const MESSAGE_COLUMN: &str = "notifications.message";

/// The value a closed stream ends with (portable JSON of DBOS's sentinel string).
const STREAM_CLOSED: &str = "\"__DBOS_STREAM_CLOSED__\"";

/// Inside a step body: the enclosing workflow and the step's operation id. A write made there
/// is a plain call, as in DBOS: no checkpoint of its own (the step's checkpoint records the
/// step), `function_id` = the step's, guarded by the workflow's ownership. A re-run step
/// (a retry, or recovery before its checkpoint) writes again.
fn step_caller() -> Option<(Arc<WorkflowContext>, i32)> {
    let (function_id, _) = current_step()?;
    WorkflowContext::ambient().map(|ctx| (ctx, function_id))
}

fn topic_of(topic: Option<&str>) -> String {
    topic.unwrap_or(NULL_TOPIC).to_owned()
}

// ---- Messages ----------------------------------------------------------------------------

/// Send `message` to the workflow `destination` on `topic` (`None`: no topic), from inside a
/// workflow: exactly once across replays, committed with the sender's checkpoint.
/// Outside workflows use [`crate::Client::send`]. Inside a step it is a plain send (no
/// checkpoint): a re-run step sends again.
pub fn send<'a, T: Serialize + ?Sized>(
    destination: &str,
    topic: impl Into<Option<&'a str>>,
    message: &T,
) -> impl Future<Output = Result<()>> + Send {
    let (step, target) = (step_caller(), WorkflowContext::operation());
    let topic = topic_of(topic.into());
    let destination = destination.to_owned();
    let payload = serialization::encode(message, || format!("a message to {destination}"));
    let halted = target.as_ref().map(|(ctx, _)| Arc::clone(ctx));
    halting(halted, async move {
        if let Some((ctx, _)) = step {
            return send_from_step(&ctx, destination, topic, payload?).await;
        }
        let (ctx, function_id) = target.ok_or(Error::NotInWorkflow("cairn::send"))?;
        ctx.check_running()?;
        check_key("destination", &destination)?;
        check_key("topic", &topic)?;
        if let Some(checkpoint) = ctx.recorded(function_id) {
            return ctx.check_name(checkpoint, SEND);
        }
        let message = NewMessage {
            destination_id: destination,
            topic,
            message: payload?,
            message_uuid: super::runtime::new_id(),
        };
        let record = ctx.step_record(function_id, SEND, now_ms());
        let (destination, topic) = (message.destination_id.clone(), message.topic.clone());
        let outcome = ctx
            .durable(SendMessage {
                message,
                sender: Some(record),
            })
            .await?;
        ctx.settle(outcome, SEND)?;
        ctx.rt
            .notifier
            .announce(Channel::Message, &destination, &topic);
        Ok(())
    })
}

/// Options for [`Client::send_with`](crate::Client::send_with).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SendOptions {
    /// Makes the send idempotent: a second send with the same key to the same destination is
    /// a no-op (stored as DBOS does, `message_uuid = "<key>::<destination>"`). Default: none.
    pub idempotency_key: Option<String>,
}

impl SendOptions {
    /// Options with an idempotency key.
    pub fn idempotency_key(key: impl Into<String>) -> Self {
        Self {
            idempotency_key: Some(key.into()),
        }
    }
}

/// A message from outside a workflow, checked and encoded when the send is called.
pub(crate) fn prepare_send<T: Serialize + ?Sized>(
    destination: &str,
    topic: Option<&str>,
    message: &T,
    options: SendOptions,
) -> Result<NewMessage> {
    check_key("destination", destination)?;
    check_key("topic", topic.unwrap_or(NULL_TOPIC))?;
    Ok(NewMessage {
        destination_id: destination.to_owned(),
        topic: topic_of(topic),
        message: serialization::encode(message, || "a message".to_owned())?,
        message_uuid: match options.idempotency_key {
            Some(key) => format!("{key}::{destination}"),
            None => super::runtime::new_id(),
        },
    })
}

/// Send a prepared message from outside a workflow.
pub(crate) async fn send_prepared(rt: &Runtime, message: NewMessage) -> Result<()> {
    let (destination, topic) = (message.destination_id.clone(), message.topic.clone());
    rt.store
        .run(SendMessage {
            message,
            sender: None,
        })
        .await?;
    rt.notifier.announce(Channel::Message, &destination, &topic);
    Ok(())
}

/// Receive the oldest unconsumed message on `topic` sent to this workflow, waiting up to
/// `timeout`; `None` when the (durable) deadline passes first. Each message is consumed by
/// exactly one `recv`, and a replay returns the same message.
///
/// A message that does not decode as `T` (a format Cairn cannot read, such as `py_pickle`,
/// or a value of another type) is [`Error::Decode`], and it stays unconsumed: the workflow
/// may handle the error, and the message is still there for whoever can read it. Messages in
/// `js_superjson` (DBOS TypeScript's default) are read as portable JSON.
pub fn recv<'a, T: DeserializeOwned>(
    topic: impl Into<Option<&'a str>>,
    timeout: Duration,
) -> impl Future<Output = Result<Option<T>>> + Send {
    let target = WorkflowContext::current().map(|ctx| {
        let id = ctx.next_id();
        let sleep_id = ctx.next_id();
        (ctx, id, sleep_id)
    });
    let topic = topic_of(topic.into());
    let halted = target.as_ref().map(|(ctx, _, _)| Arc::clone(ctx));
    halting(halted, async move {
        let (ctx, function_id, sleep_id) = target.ok_or(Error::NotInWorkflow("cairn::recv"))?;
        ctx.check_running()?;
        check_key("topic", &topic)?;
        if let Some(checkpoint) = ctx.recorded(function_id) {
            return ctx.replay(checkpoint, RECV);
        }
        let started = now_ms();
        let wake_at = durable_deadline(&ctx, sleep_id, timeout).await?;
        let subscription = ctx
            .rt
            .notifier
            .subscribe(Channel::Message, &ctx.workflow_id, &topic);
        let ctx_ref = &ctx;
        // An announcement only says "look": a duplicate one (an idempotent re-send, or the
        // same insert announced in-process and by Postgres) must not make recv give up early.
        // The look reads the message itself (the read recv makes anyway), so it is decoded
        // before anything is consumed, at no extra round trip.
        let (workflow_id, topic_ref) = (&ctx.workflow_id, &topic);
        let look = Look::Message {
            workflow_id: ctx.workflow_id.clone(),
            topic: topic.clone(),
        };
        let peeked = wait_for(Some((&ctx, look)), &subscription, wake_at, || async move {
            let peek = PeekMessage {
                workflow_id: workflow_id.clone(),
                topic: topic_ref.clone(),
            };
            ctx_ref.durable(peek).await
        })
        .await?;
        let mut record = ctx.step_record(function_id, RECV, started);
        let Some(peeked) = peeked else {
            // The deadline passed with nothing there: record `null` and consume nothing (a
            // message arriving just now was not decoded; it waits for the next recv).
            record.output = Some("null".to_owned());
            let outcome = ctx.durable(RecordStep(record)).await?;
            if let RecordOutcome::Duplicate(existing) = &outcome {
                return ctx.replay(existing, RECV);
            }
            ctx.settle(outcome, RECV)?;
            return Ok(None);
        };
        // Checked before consuming (and decoded again after: `T` need not be `Send`, so it is
        // not held across the consume).
        decode_stored::<T>(&peeked, &ctx.workflow_id, MESSAGE_COLUMN)?;
        let (outcome, message) = ctx.durable(ConsumeMessage { record, topic }).await?;
        if let RecordOutcome::Duplicate(existing) = &outcome {
            return ctx.replay(existing, RECV);
        }
        ctx.settle(outcome, RECV)?;
        match message {
            // The message looked at, or — when a sender's clock is behind ours — one sorted
            // before it and inserted in between: either way the one consumed and recorded.
            Some(consumed) => decode_stored(&consumed, &ctx.workflow_id, MESSAGE_COLUMN).map(Some),
            // Consumed by someone else meanwhile: the checkpoint says `null`, and so do we.
            None => Ok(None),
        }
    })
}

/// Wait until `check` finds something, the deadline (epoch seconds) passes (`None`), or —
/// inside a workflow — the workflow is interrupted. Inside a workflow `look` says what
/// `check` looks for, so that a long wait can leave memory (see [`evict`]): the execution
/// then halts here and runs again when what it waits for arrives.
async fn wait_for<T, F, Fut>(
    workflow: Option<(&WorkflowContext, Look)>,
    subscription: &Subscription,
    wake_at: f64,
    mut check: F,
) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let (ctx, look) = match workflow {
        Some((ctx, look)) => (Some(ctx), Some(look)),
        None => (None, None),
    };
    let evict_at = ctx
        .and_then(|ctx| evict::evict_after(ctx, until(wake_at)))
        .map(|after| tokio::time::Instant::now() + after);
    loop {
        let notified = subscription.notified();
        let checked = match (check().await, ctx) {
            (Err(error), Some(ctx)) => Err(ctx.stop_on(error)),
            (checked, _) => checked,
        };
        if let Some(found) = checked? {
            return Ok(Some(found));
        }
        let left = until(wake_at);
        if left.is_zero() {
            return Ok(None);
        }
        let wait = async {
            tokio::select! {
                _ = notified => false,
                _ = tokio::time::sleep(left.min(FALLBACK_RECHECK)) => false,
                () = until_instant(evict_at) => true,
            }
        };
        let evicting = match ctx {
            Some(ctx) => ctx.interruptible(wait).await?,
            None => wait.await,
        };
        if let (true, Some(ctx), Some(look)) = (evicting, ctx, &look) {
            // Keyed before the last look; the wake-up task looks again once it has armed its
            // wait on the key, so nothing arriving from now on is missed.
            let subscription = look.subscribe(&ctx.rt.notifier);
            if let Some(found) = check().await.map_err(|error| ctx.stop_on(error))? {
                return Ok(Some(found));
            }
            let look = look.clone();
            let wake = evict::Wake {
                wake_at,
                watch: Some((subscription, look)),
            };
            return Err(evict::evict(ctx, wake));
        }
    }
}

/// Completes at `at`, or never.
async fn until_instant(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// [`send`] from inside a step: a fresh message, no checkpoint.
async fn send_from_step(
    ctx: &WorkflowContext,
    destination: String,
    topic: String,
    payload: String,
) -> Result<()> {
    check_key("destination", &destination)?;
    check_key("topic", &topic)?;
    let message = NewMessage {
        destination_id: destination.clone(),
        topic: topic.clone(),
        message: payload,
        message_uuid: super::runtime::new_id(),
    };
    let sent = SendMessage {
        message,
        sender: None,
    };
    ctx.durable(sent).await?;
    ctx.rt
        .notifier
        .announce(Channel::Message, &destination, &topic);
    Ok(())
}

// ---- Events ------------------------------------------------------------------------------

/// Publish the event `key` of the calling workflow (the latest value wins; every value is
/// kept in the history). Exactly once across replays. Inside a step it is a plain call (no
/// checkpoint), recorded at the step's operation id: a re-run step sets it again.
pub fn set_event<T: Serialize + ?Sized>(
    key: &str,
    value: &T,
) -> impl Future<Output = Result<()>> + Send + use<T> {
    let (step, target) = (step_caller(), WorkflowContext::operation());
    let key = key.to_owned();
    let payload = serialization::encode(value, || format!("the value of event {key}"));
    let halted = target.as_ref().map(|(ctx, _)| Arc::clone(ctx));
    halting(halted, async move {
        if let Some((ctx, function_id)) = step {
            check_key("key", &key)?;
            let set = SetEventFromStep {
                workflow_id: ctx.workflow_id.clone(),
                owner_xid: ctx.owner_xid.clone(),
                function_id,
                key: key.clone(),
                value: payload?,
            };
            let outcome = ctx.durable(set).await?;
            return announce_from_step(&ctx, outcome, SET_EVENT, Channel::Event, &key);
        }
        let (ctx, function_id) = target.ok_or(Error::NotInWorkflow("cairn::set_event"))?;
        ctx.check_running()?;
        check_key("key", &key)?;
        if let Some(checkpoint) = ctx.recorded(function_id) {
            return ctx.check_name(checkpoint, SET_EVENT);
        }
        let record = ctx.step_record(function_id, SET_EVENT, now_ms());
        let outcome = ctx
            .durable(SetEvent {
                record,
                key: key.clone(),
                value: payload?,
            })
            .await?;
        ctx.settle(outcome, SET_EVENT)?;
        ctx.rt
            .notifier
            .announce(Channel::Event, &ctx.workflow_id, &key);
        Ok(())
    })
}

/// Read the event `key` of `workflow_id`, waiting up to `timeout` for it to be set; `None`
/// if it is not set by then. Inside a workflow the answer (and its deadline) is recorded.
pub fn get_event<T: DeserializeOwned + Send>(
    workflow_id: &str,
    key: &str,
    timeout: Duration,
) -> impl Future<Output = Result<Option<T>>> + Send + use<T> {
    let target = WorkflowContext::current().map(|ctx| {
        let id = ctx.next_id();
        let sleep_id = ctx.next_id();
        (ctx, id, sleep_id)
    });
    let workflow_id = workflow_id.to_owned();
    let key = key.to_owned();
    let halted = target.as_ref().map(|(ctx, _, _)| Arc::clone(ctx));
    halting(halted, async move {
        let (ctx, function_id, sleep_id) =
            target.ok_or(Error::NotInWorkflow("cairn::get_event"))?;
        ctx.check_running()?;
        if let Some(checkpoint) = ctx.recorded(function_id) {
            return ctx.replay(checkpoint, GET_EVENT);
        }
        let started = now_ms();
        let wake_at = durable_deadline(&ctx, sleep_id, timeout).await?;
        let value = wait_for_event(&ctx.rt, Some(&ctx), &workflow_id, &key, wake_at).await?;
        // Decoded before recording: a value in a foreign format is an error, not a checkpoint.
        let decoded = value
            .as_ref()
            .map(|v| decode_stored(v, &workflow_id, "workflow_events.value"))
            .transpose()?;
        let mut record = ctx.step_record(function_id, GET_EVENT, started);
        record.output = Some(value.map_or_else(|| "null".to_owned(), |v| v.text));
        ctx.record(record).await?;
        Ok(decoded)
    })
}

/// Read an event from outside a workflow, waiting up to `timeout`.
pub(crate) async fn get_event_from_outside<T: DeserializeOwned>(
    rt: &Runtime,
    workflow_id: &str,
    key: &str,
    timeout: Duration,
) -> Result<Option<T>> {
    let wake_at = (now_ms() as f64 + timeout.as_secs_f64() * 1000.0) / 1000.0;
    let value = wait_for_event(rt, None, workflow_id, key, wake_at).await?;
    value
        .map(|v| decode_stored(&v, workflow_id, "workflow_events.value"))
        .transpose()
}

/// Decode a stored value in the format its row names.
fn decode_stored<T: DeserializeOwned>(
    stored: &Stored,
    workflow_id: &str,
    column: &str,
) -> Result<T> {
    serialization::decode(
        &stored.text,
        stored.serialization.as_deref(),
        workflow_id,
        column,
    )
}

async fn wait_for_event(
    rt: &Runtime,
    ctx: Option<&WorkflowContext>,
    workflow_id: &str,
    key: &str,
    wake_at: f64,
) -> Result<Option<Stored>> {
    let subscription = rt.notifier.subscribe(Channel::Event, workflow_id, key);
    let look = || Look::Event {
        workflow_id: workflow_id.to_owned(),
        key: key.to_owned(),
    };
    wait_for(ctx.map(|ctx| (ctx, look())), &subscription, wake_at, || {
        rt.store.run(GetEvent {
            workflow_id: workflow_id.to_owned(),
            key: key.to_owned(),
        })
    })
    .await
}

/// Every event of a workflow, with its latest value.
pub(crate) async fn list_events(
    rt: &Runtime,
    workflow_id: &str,
) -> Result<BTreeMap<String, Value>> {
    let mut events = BTreeMap::new();
    let events_of = ListEvents {
        workflow_id: workflow_id.to_owned(),
    };
    for (key, stored) in rt.store.run(events_of).await? {
        let value = decode_stored(&stored, workflow_id, "workflow_events.value")?;
        events.insert(key, value);
    }
    Ok(events)
}

// ---- Streams -----------------------------------------------------------------------------

/// Append `value` to the calling workflow's stream `key`. Exactly once across replays. Inside
/// a step it is a plain call (no checkpoint): a re-run step appends the value again
/// (at-least-once, like the step itself).
pub fn write_stream<T: Serialize + ?Sized>(
    key: &str,
    value: &T,
) -> impl Future<Output = Result<()>> + Send + use<T> {
    let (step, target) = (step_caller(), WorkflowContext::operation());
    let key = key.to_owned();
    let payload = serialization::encode(value, || format!("a value of stream {key}"));
    async move {
        match step {
            Some(step) => append_from_step(step, WRITE_STREAM, key, payload).await,
            None => append(target, WRITE_STREAM, key, payload).await,
        }
    }
}

/// Close the calling workflow's stream `key`: readers end after the values written so far.
/// Inside a step it is a plain call, like [`write_stream`].
pub fn close_stream(key: &str) -> impl Future<Output = Result<()>> + Send + use<> {
    let (step, target) = (step_caller(), WorkflowContext::operation());
    let key = key.to_owned();
    let closed = Ok(STREAM_CLOSED.to_owned());
    async move {
        match step {
            Some(step) => append_from_step(step, CLOSE_STREAM, key, closed).await,
            None => append(target, CLOSE_STREAM, key, closed).await,
        }
    }
}

/// [`write_stream`] / [`close_stream`] from inside step `function_id`.
async fn append_from_step(
    (ctx, function_id): (Arc<WorkflowContext>, i32),
    name: &'static str,
    key: String,
    payload: Result<String>,
) -> Result<()> {
    check_key("key", &key)?;
    let write = WriteStreamFromStep {
        workflow_id: ctx.workflow_id.clone(),
        owner_xid: ctx.owner_xid.clone(),
        function_id,
        key: key.clone(),
        value: payload?,
    };
    let outcome = ctx.durable(write).await?;
    announce_from_step(&ctx, outcome, name, Channel::Stream, &key)
}

/// Announce a write made from inside a step, or — when the execution no longer owns the
/// workflow and nothing was written — halt it and return why, to the step body.
fn announce_from_step(
    ctx: &WorkflowContext,
    outcome: RecordOutcome,
    name: &str,
    channel: Channel,
    key: &str,
) -> Result<()> {
    ctx.settle(outcome, name)?;
    ctx.rt.notifier.announce(channel, &ctx.workflow_id, key);
    Ok(())
}

async fn append(
    target: Option<(Arc<WorkflowContext>, i32)>,
    name: &'static str,
    key: String,
    payload: Result<String>,
) -> Result<()> {
    let halted = target.as_ref().map(|(ctx, _)| Arc::clone(ctx));
    halting(halted, append_now(target, name, key, payload)).await
}

/// [`append`] itself.
async fn append_now(
    target: Option<(Arc<WorkflowContext>, i32)>,
    name: &'static str,
    key: String,
    payload: Result<String>,
) -> Result<()> {
    let (ctx, function_id) = target.ok_or(Error::NotInWorkflow("cairn::write_stream"))?;
    ctx.check_running()?;
    check_key("key", &key)?;
    if let Some(checkpoint) = ctx.recorded(function_id) {
        return ctx.check_name(checkpoint, name);
    }
    let record = ctx.step_record(function_id, name, now_ms());
    let outcome = ctx
        .durable(WriteStream {
            record,
            key: key.clone(),
            value: payload?,
        })
        .await?;
    ctx.settle(outcome, name)?;
    ctx.rt
        .notifier
        .announce(Channel::Stream, &ctx.workflow_id, &key);
    Ok(())
}

/// Where a stream reader is.
struct Reader {
    rt: Arc<Runtime>,
    workflow_id: String,
    key: String,
    next_offset: i32,
    buffered: VecDeque<(i32, Stored)>,
    done: bool,
}

/// Read a workflow's stream `key` in order: the stream ends at `close_stream`, or when the
/// workflow has finished and every value written has been read.
pub(crate) fn read_stream<T: DeserializeOwned + Send + 'static>(
    rt: Arc<Runtime>,
    workflow_id: &str,
    key: &str,
    offset: u64,
) -> impl Stream<Item = Result<T>> + Send + 'static {
    let reader = Reader {
        rt,
        workflow_id: workflow_id.to_owned(),
        key: key.to_owned(),
        next_offset: i32::try_from(offset).unwrap_or(i32::MAX),
        buffered: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(reader, |mut reader| async move {
        if reader.done {
            return None;
        }
        match reader.next_value().await {
            Ok(Some(stored)) => {
                let value = decode_stored(&stored, &reader.workflow_id, "streams.value");
                Some((value, reader))
            }
            Ok(None) => None,
            Err(error) => {
                reader.done = true;
                Some((Err(error), reader))
            }
        }
    })
}

impl Reader {
    /// The next stored value, or `None` at the end of the stream.
    async fn next_value(&mut self) -> Result<Option<Stored>> {
        let subscription =
            self.rt
                .notifier
                .subscribe(Channel::Stream, &self.workflow_id, &self.key);
        loop {
            if let Some((offset, stored)) = self.buffered.pop_front() {
                self.next_offset = offset + 1;
                if stored.text == STREAM_CLOSED {
                    self.done = true;
                    return Ok(None);
                }
                return Ok(Some(stored));
            }
            let notified = subscription.notified();
            let rows = self.rt.store.run(self.read_from_next()).await?;
            if !rows.is_empty() {
                self.buffered.extend(rows);
                continue;
            }
            if self.writer_finished().await? {
                // The writer may have written between our read and its completion: drain.
                let rows = self.rt.store.run(self.read_from_next()).await?;
                if rows.is_empty() {
                    self.done = true;
                    return Ok(None);
                }
                self.buffered.extend(rows);
                continue;
            }
            // The writer's completion here wakes us too (it announces nothing on the stream).
            let finished_here = async {
                match self.rt.local_outcome(&self.workflow_id) {
                    Some(mut slot) => drop(slot.wait_for(Option::is_some).await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = finished_here => {}
                _ = tokio::time::sleep(FALLBACK_RECHECK) => {}
            }
        }
    }

    /// The read of every value from the next unread offset on.
    fn read_from_next(&self) -> ReadStream {
        ReadStream {
            workflow_id: self.workflow_id.clone(),
            key: self.key.clone(),
            from_offset: self.next_offset,
        }
    }

    async fn writer_finished(&self) -> Result<bool> {
        let row = self
            .rt
            .store
            .run(GetWorkflow::of(&self.workflow_id))
            .await?;
        match row {
            Some(row) => Ok(row.status.as_ref().is_some_and(WorkflowState::is_terminal)),
            // As DBOS: reading the stream of a workflow that does not exist is an error, not
            // an empty stream.
            None => Err(Error::NotFound(self.workflow_id.clone())),
        }
    }
}
