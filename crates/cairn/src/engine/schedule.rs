//! Schedules: cron expressions that start a workflow at every tick, stored in
//! `workflow_schedules` as DBOS 3.4 stores them.
//!
//! Every launched application runs one scheduler task ([`run`]). It loads the application's
//! active schedules, sleeps until the next tick of any, and fires it: it inserts the tick's
//! workflow, `ENQUEUED` on the schedule's queue (DBOS's internal queue by default), with the
//! id `sched-<schedule name>-<tick time, ISO 8601>`. That id is the idempotency key, so however
//! many processes run the same schedule, each tick starts exactly one workflow; whichever
//! process dequeues it runs it. The schedules are read again every [`RELOAD`], and at once
//! when this process changes one.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde_json::Value;
use tokio::sync::Notify;

use super::recovery::INTERNAL_QUEUE;
use super::runtime::{Runtime, now_ms};
use crate::error::{Error, Result};
use crate::serialization;
use crate::status::WorkflowState;
use crate::store::{InsertTick, ListSchedules, NewWorkflow, ScheduleRow, SetLastFired};

/// How often the scheduler reads the schedules again, to pick up those created, changed,
/// paused or deleted by other processes (its own changes it picks up at once).
const RELOAD: Duration = Duration::from_secs(2);

/// `workflow_schedules.status` of a schedule that fires.
pub(crate) const ACTIVE: &str = "ACTIVE";
/// `workflow_schedules.status` of a paused schedule.
pub(crate) const PAUSED: &str = "PAUSED";

/// How a schedule is created: time zone, queue, automatic backfill.
///
/// ```
/// let options = cairn::ScheduleOptions::default()
///     .timezone("Europe/Berlin")
///     .automatic_backfill(true);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleOptions {
    /// The IANA time zone the cron expression is read in (`America/New_York`). Default:
    /// UTC.
    pub timezone: Option<String>,
    /// The queue each tick's workflow is enqueued on. Default: DBOS's internal queue, which
    /// every process serves.
    pub queue: Option<String>,
    /// Whether a process that starts firing the schedule first fires the ticks missed since
    /// its last one (while no process ran it, or while it was paused), up to
    /// [`CairnBuilder::max_automatic_backfill`](crate::CairnBuilder::max_automatic_backfill)
    /// of the most recent. Default: false.
    pub automatic_backfill: bool,
}

impl ScheduleOptions {
    /// Read the cron expression in this IANA time zone. Default: UTC.
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = Some(timezone.into());
        self
    }

    /// Enqueue each tick's workflow on this queue. Default: DBOS's internal queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Fire missed ticks when firing resumes. Default: false.
    pub fn automatic_backfill(mut self, backfill: bool) -> Self {
        self.automatic_backfill = backfill;
        self
    }
}

/// Whether a schedule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleStatus {
    /// It fires (`ACTIVE`).
    Active,
    /// It does not fire until resumed (`PAUSED`).
    Paused,
}

/// A stored schedule, as [`Client::list_schedules`](crate::Client::list_schedules) reads it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Schedule {
    /// Its unique name.
    pub name: String,
    /// Its id (a UUID).
    pub id: String,
    /// The workflow function each tick starts, by its registered name.
    pub workflow_name: String,
    /// The cron expression: 5 fields, or 6 with seconds first.
    pub cron: String,
    /// Whether it fires.
    pub status: ScheduleStatus,
    /// The context passed to each tick's workflow (its stored text as a string if it is not
    /// JSON, e.g. pickled by DBOS Python, as DBOS's `list_schedules` does).
    pub context: Value,
    /// The scheduled time of the latest tick fired, if any.
    pub last_fired_at: Option<DateTime<Utc>>,
    /// Whether missed ticks are fired when firing resumes.
    pub automatic_backfill: bool,
    /// The IANA time zone of the cron expression; `None` is UTC.
    pub timezone: Option<String>,
    /// The queue each tick is enqueued on; `None` is DBOS's internal queue.
    pub queue: Option<String>,
    /// The application owning it; `None` if unowned.
    pub application_name: Option<String>,
}

impl Schedule {
    pub(crate) fn from_row(row: ScheduleRow) -> Self {
        Self {
            status: if row.status == PAUSED {
                ScheduleStatus::Paused
            } else {
                ScheduleStatus::Active
            },
            context: serde_json::from_str(&row.context)
                .unwrap_or_else(|_| Value::String(row.context.clone())),
            last_fired_at: row
                .last_fired_at
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            name: row.schedule_name,
            id: row.schedule_id,
            workflow_name: row.workflow_name,
            cron: row.schedule,
            automatic_backfill: row.automatic_backfill,
            timezone: row.cron_timezone,
            queue: row.queue_name,
            application_name: row.application_name,
        }
    }
}

/// Parse a cron expression as DBOS does: 5 fields (minute first), or 6 with seconds first.
pub(crate) fn parse_cron(expression: &str) -> Result<Cron> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| Error::InvalidArgument {
            argument: "cron",
            reason: format!("`{expression}` is not a cron expression: {e}"),
        })
}

/// The time zone a schedule names (UTC for none).
pub(crate) fn parse_timezone(timezone: Option<&str>) -> Result<Tz> {
    match timezone {
        None => Ok(Tz::UTC),
        Some(name) => Tz::from_str(name).map_err(|_| Error::InvalidArgument {
            argument: "timezone",
            reason: format!("`{name}` is not an IANA time zone"),
        }),
    }
}

/// The first tick strictly after `after`, read in `tz`.
pub(crate) fn next_tick(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Tz>> {
    cron.find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
}

/// The ticks strictly after `after` and strictly before `before`, in order, read in `tz`
/// (DBOS's backfill range).
pub(crate) fn ticks_between(
    cron: &Cron,
    tz: Tz,
    after: DateTime<Utc>,
    before: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Tz>> {
    cron.iter_after(after.with_timezone(&tz))
        .take_while(move |t| t.with_timezone(&Utc) < before)
}

/// At most `limit` of the latest ticks strictly after `after` and strictly before `before`,
/// oldest first: the ticks an automatic backfill fires. Walks back from `before`, so a long
/// downtime costs no more than `limit` steps.
pub(crate) fn latest_ticks(
    cron: &Cron,
    tz: Tz,
    after: DateTime<Utc>,
    before: DateTime<Utc>,
    limit: usize,
) -> Vec<DateTime<Tz>> {
    let mut ticks: Vec<DateTime<Tz>> = cron
        .iter_before(before.with_timezone(&tz))
        .take_while(|t| t.with_timezone(&Utc) > after)
        .take(limit)
        .collect();
    ticks.reverse();
    ticks
}

/// A time as Python's `datetime.isoformat()` writes it: `2026-03-29T03:00:00+02:00`, with
/// microseconds only when there are some. DBOS builds tick ids and `last_fired_at` from it.
pub(crate) fn isoformat<Z: TimeZone>(time: &DateTime<Z>) -> String
where
    Z::Offset: std::fmt::Display,
{
    if time.timestamp_subsec_micros() == 0 {
        time.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    } else {
        time.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string()
    }
}

/// The workflow id of a schedule's tick (DBOS's).
pub(crate) fn tick_id<Z: TimeZone>(schedule_name: &str, time: &DateTime<Z>) -> String
where
    Z::Offset: std::fmt::Display,
{
    format!("sched-{schedule_name}-{}", isoformat(time))
}

/// A schedule ready to fire: its row, parsed.
struct Parsed {
    row: ScheduleRow,
    cron: Cron,
    tz: Tz,
    context: Value,
}

impl Parsed {
    fn new(row: ScheduleRow) -> Result<Self> {
        let cron = parse_cron(&row.schedule)?;
        let tz = parse_timezone(row.cron_timezone.as_deref())?;
        // Cairn writes portable JSON; a context pickled by DBOS Python cannot be read here.
        let context = serde_json::from_str(&row.context).map_err(|e| Error::Decode {
            workflow_id: format!("schedule {}", row.schedule_name),
            column: "workflow_schedules.context".to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            row,
            cron,
            tz,
            context,
        })
    }
}

/// Load a schedule's row and parse it.
pub(crate) async fn load(rt: &Runtime, name: &str) -> Result<Loaded> {
    let row = rt
        .store
        .run(crate::store::GetSchedule {
            schedule_name: name.to_owned(),
        })
        .await?
        .ok_or_else(|| Error::NotFound(format!("schedule {name}")))?;
    Parsed::new(row).map(Loaded)
}

/// A stored schedule, parsed (opaque outside this module).
pub(crate) struct Loaded(Parsed);

/// Check a schedule's definition before storing it.
pub(crate) fn validate(name: &str, cron: &str, options: &ScheduleOptions) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument {
            argument: "name",
            reason: "a schedule needs a name".to_owned(),
        });
    }
    parse_cron(cron)?;
    parse_timezone(options.timezone.as_deref())?;
    Ok(())
}

/// The row of a new schedule.
pub(crate) fn new_row(
    rt: &Runtime,
    name: &str,
    workflow_name: &str,
    cron: &str,
    context: &Value,
    options: &ScheduleOptions,
) -> Result<ScheduleRow> {
    validate(name, cron, options)?;
    Ok(ScheduleRow {
        schedule_id: uuid::Uuid::new_v4().to_string(),
        schedule_name: name.to_owned(),
        workflow_name: workflow_name.to_owned(),
        workflow_class_name: None,
        schedule: cron.to_owned(),
        status: ACTIVE.to_owned(),
        context: serialization::encode(context, || format!("the context of schedule {name}"))?,
        last_fired_at: None,
        automatic_backfill: options.automatic_backfill,
        cron_timezone: options.timezone.clone(),
        queue_name: options.queue.clone(),
        application_name: Some(rt.app_name.clone()),
    })
}

/// Insert the workflow of one tick at `time` under `workflow_id` (idempotent: an existing id
/// is left alone). Answers whether this call inserted it.
async fn fire(rt: &Runtime, s: &Parsed, workflow_id: String, time: &DateTime<Tz>) -> Result<bool> {
    // As DBOS's portable JSON writes a datetime: UTC, milliseconds, `Z`.
    let scheduled = time
        .with_timezone(&Utc)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let args = [Value::String(scheduled), s.context.clone()];
    let new = NewWorkflow {
        id: workflow_id,
        name: s.row.workflow_name.clone(),
        status: WorkflowState::Enqueued,
        queue_name: Some(
            s.row
                .queue_name
                .clone()
                .unwrap_or_else(|| INTERNAL_QUEUE.to_owned()),
        ),
        executor_id: rt.executor_id.clone(),
        app_version: Some(rt.app_version.clone()),
        // The schedule's owner routes its runs, whoever fires them (as DBOS).
        application_name: Some(
            s.row
                .application_name
                .clone()
                .unwrap_or_else(|| rt.app_name.clone()),
        ),
        inputs: serialization::encode_inputs(&args)?,
        creator_xid: uuid::Uuid::new_v4().to_string(),
        parent_workflow_id: None,
        timeout_ms: None,
        deadline_epoch_ms: None,
        config_name: None,
        now_ms: now_ms(),
        attributes: None,
    };
    let tick = InsertTick {
        workflow: new,
        schedule_name: s.row.schedule_name.clone(),
    };
    let outcome = rt.store.run(tick).await?;
    Ok(outcome == crate::store::InsertOutcome::Inserted)
}

/// Fire every tick of a schedule strictly after `after` and before `before` (DBOS's
/// `backfill_schedule`). Answers the ticks' workflow ids, in order, those that existed
/// included.
pub(crate) async fn backfill(
    rt: &Runtime,
    schedule: &Loaded,
    after: DateTime<Utc>,
    before: DateTime<Utc>,
) -> Result<Vec<String>> {
    let s = &schedule.0;
    let mut ids = Vec::new();
    for time in ticks_between(&s.cron, s.tz, after, before) {
        let id = tick_id(&s.row.schedule_name, &time);
        fire(rt, s, id.clone(), &time).await?;
        ids.push(id);
    }
    rt.wake_dispatcher();
    Ok(ids)
}

/// Fire a schedule's workflow now, outside its cron (DBOS's `trigger_schedule`), under the
/// id `sched-<name>-trigger-<now>`. Answers the id.
pub(crate) async fn trigger(rt: &Runtime, schedule: &Loaded) -> Result<String> {
    let s = &schedule.0;
    let now = Utc::now().with_timezone(&Tz::UTC);
    let id = format!("sched-{}-trigger-{}", s.row.schedule_name, isoformat(&now));
    fire(rt, s, id.clone(), &now).await?;
    rt.wake_dispatcher();
    Ok(id)
}

/// What the application and its scheduler task share.
#[derive(Debug)]
pub(crate) struct Scheduler {
    /// Set when this process changed a schedule: read them again before firing.
    dirty: AtomicBool,
    /// Wakes the scheduler task.
    wake: Notify,
    /// Held while the task reads schedules and fires ticks, so a change made here can wait
    /// until no firing based on the old schedules is under way.
    firing: tokio::sync::Mutex<()>,
    /// The most missed ticks an automatic backfill fires per schedule.
    max_backfill: usize,
}

impl Scheduler {
    pub(crate) fn new(max_backfill: usize) -> Arc<Self> {
        Arc::new(Self {
            dirty: AtomicBool::new(true),
            wake: Notify::new(),
            firing: tokio::sync::Mutex::new(()),
            max_backfill,
        })
    }

    /// This process changed a schedule: when this returns, no tick based on the old
    /// schedules is being fired here, and the next firing reads them again.
    pub(crate) async fn changed(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        drop(self.firing.lock().await);
    }
}

/// A schedule this process fires.
struct Firing {
    parsed: Parsed,
    /// Its next tick; `None` if it has none (a cron that never matches again).
    next: Option<DateTime<Tz>>,
}

/// The definition of a schedule, as far as firing goes: a change restarts its clock.
fn definition(row: &ScheduleRow) -> impl PartialEq + '_ {
    (
        &row.workflow_name,
        &row.workflow_class_name,
        &row.schedule,
        &row.context,
        &row.cron_timezone,
        &row.queue_name,
    )
}

/// Run the application's scheduler until shutdown.
pub(crate) async fn run(rt: Arc<Runtime>, scheduler: Arc<Scheduler>) {
    let mut firing: HashMap<String, Firing> = HashMap::new();
    // Rows that could not be parsed, by id, so each is reported once per definition.
    let mut broken: HashMap<String, ScheduleRow> = HashMap::new();
    let mut next_reload = tokio::time::Instant::now();
    while !rt.is_shutting_down() {
        {
            let _firing = scheduler.firing.lock().await;
            let dirty = scheduler.dirty.swap(false, Ordering::SeqCst);
            if dirty || tokio::time::Instant::now() >= next_reload {
                let list = ListSchedules {
                    application_name: Some(rt.app_name.clone()),
                };
                match rt.store.run(list).await {
                    Ok(rows) => {
                        reconcile(&rt, &scheduler, &mut firing, &mut broken, rows).await;
                    }
                    Err(error) => tracing::warn!(%error, "could not read the schedules"),
                }
                next_reload = tokio::time::Instant::now() + RELOAD;
            }
            fire_due(&rt, &scheduler, &mut firing).await;
        }
        let now = Utc::now();
        let until_tick = firing
            .values()
            .filter_map(|f| f.next.as_ref())
            .map(|t| {
                (t.with_timezone(&Utc) - now)
                    .to_std()
                    .unwrap_or(Duration::ZERO)
            })
            .min();
        let wake_at = match until_tick {
            Some(wait) => next_reload.min(tokio::time::Instant::now() + wait),
            None => next_reload,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = scheduler.wake.notified() => {}
            _ = rt.shutdown_requested() => {}
        }
    }
}

/// Bring the schedules fired here in line with the stored ones: stop those deleted or
/// paused, restart those whose definition changed, start new ones (after their automatic
/// backfill, if they have one).
async fn reconcile(
    rt: &Runtime,
    scheduler: &Scheduler,
    firing: &mut HashMap<String, Firing>,
    broken: &mut HashMap<String, ScheduleRow>,
    rows: Vec<ScheduleRow>,
) {
    let active: HashMap<&str, &ScheduleRow> = rows
        .iter()
        .filter(|r| r.status == ACTIVE)
        .map(|r| (r.schedule_id.as_str(), r))
        .collect();
    firing.retain(|id, f| {
        active
            .get(id.as_str())
            .is_some_and(|row| definition(row) == definition(&f.parsed.row))
    });
    broken.retain(|id, row| {
        active
            .get(id.as_str())
            .is_some_and(|r| definition(r) == definition(row))
    });
    let now = Utc::now();
    for row in active.into_values() {
        if let Some(f) = firing.get_mut(&row.schedule_id) {
            f.parsed.row = row.clone();
            continue;
        }
        if broken.contains_key(&row.schedule_id) {
            continue;
        }
        let parsed = match Parsed::new(row.clone()) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::error!(schedule = %row.schedule_name, %error, "cannot fire schedule");
                broken.insert(row.schedule_id.clone(), row.clone());
                continue;
            }
        };
        if row.automatic_backfill {
            automatic_backfill(rt, scheduler, &parsed, now).await;
        }
        let next = next_tick(&parsed.cron, parsed.tz, now);
        firing.insert(row.schedule_id.clone(), Firing { parsed, next });
    }
}

/// Fire the ticks a schedule missed since its last one, the latest `max_backfill` of them.
async fn automatic_backfill(rt: &Runtime, scheduler: &Scheduler, s: &Parsed, now: DateTime<Utc>) {
    let Some(last) = s
        .row
        .last_fired_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    else {
        return;
    };
    let missed = latest_ticks(
        &s.cron,
        s.tz,
        last.with_timezone(&Utc),
        now,
        scheduler.max_backfill,
    );
    if missed.is_empty() {
        return;
    }
    tracing::info!(schedule = %s.row.schedule_name, ticks = missed.len(), "firing missed ticks");
    let mut latest = None;
    for time in &missed {
        let id = tick_id(&s.row.schedule_name, time);
        match fire(rt, s, id, time).await {
            Ok(_) => latest = Some(time),
            Err(error) => {
                tracing::warn!(schedule = %s.row.schedule_name, %error, "could not fire a missed tick");
                break;
            }
        }
    }
    if let Some(time) = latest {
        record_last_fired(rt, &s.row.schedule_name, time).await;
    }
    rt.wake_dispatcher();
}

/// Fire every tick that is due, then record each schedule's latest.
async fn fire_due(rt: &Runtime, scheduler: &Scheduler, firing: &mut HashMap<String, Firing>) {
    let now = Utc::now();
    let mut fired_any = false;
    for f in firing.values_mut() {
        let mut latest = None;
        let mut fired = 0;
        while let Some(time) = f.next.filter(|t| t.with_timezone(&Utc) <= now) {
            if fired >= scheduler.max_backfill.max(1) {
                // Far behind (the process was suspended): skip to the present.
                f.next = next_tick(&f.parsed.cron, f.parsed.tz, now);
                break;
            }
            let id = tick_id(&f.parsed.row.schedule_name, &time);
            if let Err(error) = fire(rt, &f.parsed, id, &time).await {
                tracing::warn!(schedule = %f.parsed.row.schedule_name, %error, "could not fire a tick");
                // Tried again at the next wake-up (shutdown, or a database that is down).
                break;
            }
            fired += 1;
            latest = Some(time);
            f.next = next_tick(&f.parsed.cron, f.parsed.tz, time.with_timezone(&Utc));
        }
        if let Some(time) = latest {
            fired_any = true;
            record_last_fired(rt, &f.parsed.row.schedule_name, &time).await;
        }
    }
    if fired_any {
        rt.wake_dispatcher();
    }
}

async fn record_last_fired(rt: &Runtime, schedule_name: &str, time: &DateTime<Tz>) {
    let op = SetLastFired {
        schedule_name: schedule_name.to_owned(),
        last_fired_at: isoformat(time),
    };
    if let Err(error) = rt.store.run(op).await {
        tracing::warn!(schedule = schedule_name, %error, "could not record the last tick");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_fields() {
        let every_minute = parse_cron("* * * * *").expect("5 fields");
        let next = next_tick(&every_minute, Tz::UTC, utc("2026-01-01T00:00:30Z")).expect("tick");
        assert_eq!(isoformat(&next), "2026-01-01T00:01:00+00:00");
        let every_5s = parse_cron("*/5 * * * * *").expect("6 fields, seconds first");
        let next = next_tick(&every_5s, Tz::UTC, utc("2026-01-01T00:00:01Z")).expect("tick");
        assert_eq!(isoformat(&next), "2026-01-01T00:00:05+00:00");
        assert!(parse_cron("not a cron").is_err());
        assert!(parse_timezone(Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn ids_match_dbos() {
        let berlin = parse_timezone(Some("Europe/Berlin")).expect("tz");
        let time = utc("2026-07-01T10:00:00Z").with_timezone(&berlin);
        assert_eq!(
            tick_id("daily", &time),
            "sched-daily-2026-07-01T12:00:00+02:00"
        );
        let with_micros = utc("2026-07-01T10:00:00.123456Z");
        assert_eq!(isoformat(&with_micros), "2026-07-01T10:00:00.123456+00:00");
    }

    /// Europe/Berlin springs forward on 2026-03-29 (02:00 → 03:00) and falls back on
    /// 2026-10-25 (03:00 → 02:00): a daily 09:00 tick stays at 09:00 local time.
    #[test]
    fn daily_ticks_across_dst_in_berlin() {
        let berlin = parse_timezone(Some("Europe/Berlin")).expect("tz");
        let cron = parse_cron("0 9 * * *").expect("cron");
        let ticks: Vec<String> = ticks_between(
            &cron,
            berlin,
            utc("2026-03-28T00:00:00Z"),
            utc("2026-03-31T00:00:00Z"),
        )
        .map(|t| isoformat(&t))
        .collect();
        assert_eq!(
            ticks,
            [
                "2026-03-28T09:00:00+01:00",
                "2026-03-29T09:00:00+02:00",
                "2026-03-30T09:00:00+02:00",
            ]
        );
        let ticks: Vec<String> = ticks_between(
            &cron,
            berlin,
            utc("2026-10-24T00:00:00Z"),
            utc("2026-10-27T00:00:00Z"),
        )
        .map(|t| isoformat(&t))
        .collect();
        assert_eq!(
            ticks,
            [
                "2026-10-24T09:00:00+02:00",
                "2026-10-25T09:00:00+01:00",
                "2026-10-26T09:00:00+01:00",
            ]
        );
    }

    /// New York springs forward on 2026-03-08 at 02:00: hourly ticks skip the hour that does
    /// not exist, and are an hour apart in real time throughout.
    #[test]
    fn hourly_ticks_across_the_spring_gap_in_new_york() {
        let new_york = parse_timezone(Some("America/New_York")).expect("tz");
        let cron = parse_cron("0 0 * * * *").expect("cron");
        let ticks: Vec<DateTime<Tz>> = ticks_between(
            &cron,
            new_york,
            utc("2026-03-08T05:30:00Z"),
            utc("2026-03-08T09:30:00Z"),
        )
        .collect();
        let local: Vec<String> = ticks.iter().map(isoformat).collect();
        assert_eq!(
            local,
            [
                "2026-03-08T01:00:00-05:00",
                "2026-03-08T03:00:00-04:00",
                "2026-03-08T04:00:00-04:00",
                "2026-03-08T05:00:00-04:00",
            ]
        );
    }

    #[test]
    fn automatic_backfill_takes_the_latest() {
        let cron = parse_cron("0 * * * *").expect("cron");
        let ticks: Vec<String> = latest_ticks(
            &cron,
            Tz::UTC,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-02T00:30:00Z"),
            3,
        )
        .iter()
        .map(isoformat)
        .collect();
        assert_eq!(
            ticks,
            [
                "2026-01-01T22:00:00+00:00",
                "2026-01-01T23:00:00+00:00",
                "2026-01-02T00:00:00+00:00",
            ]
        );
        // Bounded by the last tick fired, exclusive.
        let ticks = latest_ticks(
            &cron,
            Tz::UTC,
            utc("2026-01-01T23:00:00Z"),
            utc("2026-01-02T00:30:00Z"),
            3,
        );
        assert_eq!(ticks.len(), 1);
    }
}
