//! Change announcements: `LISTEN` on a dedicated connection (not from the pool), driven by a
//! task of its own that hands every notification to the engine's sink, reconnects with
//! backoff after a loss, and ends when the store closes.

use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::connect::Target;
use crate::error::{Error, Result};
use crate::store::ChangeSink;

/// The channels Cairn listens on (the trigger's, and the ones events and streams announce on).
const LISTEN_SQL: &str = "LISTEN dbos_notifications_channel; LISTEN dbos_workflow_events_channel; \
     LISTEN dbos_streams_channel";

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long opening the listener connection may take (unless the URL says).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `close` waits for a listener task before aborting it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The listeners of one store: where to connect, the shutdown signal, and the running tasks.
pub(super) struct Listeners {
    /// The pool's configuration, with TCP keepalives tightened so a silent loss is noticed.
    config: Config,
    /// The pool's TLS connector.
    tls: MakeRustlsConnect,
    /// The URL with its password masked, for messages.
    redacted: String,
    /// `true` once the store is closed.
    shutdown: watch::Sender<bool>,
    /// The listener tasks started so far.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// How a listening session ended.
enum End {
    /// The store closed.
    Stopped,
    /// The connection failed or was lost.
    Lost(std::io::Error),
}

impl Listeners {
    /// Listeners connecting where the pool connects (after `bootstrap` settled the TLS mode).
    pub(super) fn new(target: &Target) -> Self {
        let mut config = target.config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(15))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        Self {
            config,
            tls: target.tls.clone(),
            redacted: target.redacted.clone(),
            shutdown: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Start a listener delivering to `sink`; returns once it is listening, or with the error
    /// of its first connection attempt (then nothing keeps running).
    pub(super) async fn start(&self, sink: ChangeSink) -> Result<()> {
        let context = || format!("listening for changes on {}", self.redacted);
        let stop = self.shutdown.subscribe();
        if *stop.borrow() {
            return Err(Error::database(
                context(),
                std::io::Error::other("the store is closed"),
            ));
        }
        let (ready, listening) = oneshot::channel();
        let task = tokio::spawn(run(
            self.config.clone(),
            self.tls.clone(),
            sink,
            stop,
            ready,
        ));
        self.lock().push(task);
        match listening.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::database(context(), e)),
            // The task ended without a word: the store closed while it was connecting.
            Err(_) => Err(Error::database(
                context(),
                std::io::Error::other("the store closed while connecting"),
            )),
        }
    }

    /// Signal every listener to stop and wait for them (aborting any that does not end).
    pub(super) async fn close(&self) {
        self.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.lock());
        for task in tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
                abort.abort();
            }
        }
    }

    /// The task list, even if a panic poisoned its lock.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A listener task: sessions one after the other until the store closes. The first session's
/// outcome goes to `ready`; after a loss it reconnects with backoff and, once listening again,
/// delivers `("*", "")` so waiters re-check what they may have missed.
async fn run(
    config: Config,
    tls: MakeRustlsConnect,
    sink: ChangeSink,
    mut stop: watch::Receiver<bool>,
    ready: oneshot::Sender<std::io::Result<()>>,
) {
    let mut ready = Some(ready);
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut listened = false;
        match session(&config, &tls, &sink, &mut stop, &mut ready, &mut listened).await {
            End::Stopped => return,
            End::Lost(e) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e));
                    return;
                }
                tracing::warn!(error = %e, retry_in = ?backoff, "lost the change listener connection");
            }
        }
        if listened {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|closed| *closed) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: connect, `LISTEN`, then deliver notifications until it is lost or the store
/// closes. Sets `listened` once the `LISTEN`s took effect.
async fn session(
    config: &Config,
    tls: &MakeRustlsConnect,
    sink: &ChangeSink,
    stop: &mut watch::Receiver<bool>,
    ready: &mut Option<oneshot::Sender<std::io::Result<()>>>,
    listened: &mut bool,
) -> End {
    let (client, mut connection) = tokio::select! {
        connected = config.connect(tls.clone()) => match connected {
            Ok(pair) => pair,
            Err(e) => return End::Lost(std::io::Error::other(e)),
        },
        _ = stop.wait_for(|closed| *closed) => return End::Stopped,
    };
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen = client.batch_execute(LISTEN_SQL);
    tokio::pin!(listen);
    loop {
        tokio::select! {
            done = &mut listen => match done {
                Ok(()) => break,
                Err(e) => return End::Lost(std::io::Error::other(e)),
            },
            message = messages.next() => if let Some(end) = deliver(sink, message) {
                return end;
            },
            _ = stop.wait_for(|closed| *closed) => return End::Stopped,
        }
    }
    *listened = true;
    match ready.take() {
        Some(ready) => {
            let _ = ready.send(Ok(()));
        }
        None => sink("*", ""),
    }
    loop {
        tokio::select! {
            message = messages.next() => if let Some(end) = deliver(sink, message) {
                return end;
            },
            _ = stop.wait_for(|closed| *closed) => return End::Stopped,
        }
    }
}

/// Hand a notification to the sink; returns how the session ended if the connection did.
fn deliver(
    sink: &ChangeSink,
    message: Option<std::result::Result<AsyncMessage, tokio_postgres::Error>>,
) -> Option<End> {
    match message {
        Some(Ok(AsyncMessage::Notification(n))) => {
            sink(n.channel(), n.payload());
            None
        }
        Some(Ok(AsyncMessage::Notice(notice))) => {
            tracing::debug!(%notice, "notice on the change listener connection");
            None
        }
        Some(Ok(_)) => None,
        Some(Err(e)) => Some(End::Lost(std::io::Error::other(e))),
        None => Some(End::Lost(std::io::Error::other(
            "the server closed the connection",
        ))),
    }
}
