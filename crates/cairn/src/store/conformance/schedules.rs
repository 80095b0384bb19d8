//! Schedules: the rows of `workflow_schedules`, as DBOS 3.4 keeps them.

use super::*;
use crate::store::{
    CreateSchedule, DeleteSchedule, GetSchedule, InsertOutcome, InsertTick, ListSchedules,
    ScheduleRow, SetLastFired, SetScheduleStatus,
};

/// A schedule row named `name`, owned by `app`.
fn schedule(name: &str, app: Option<&str>) -> ScheduleRow {
    ScheduleRow {
        schedule_id: format!("id-{name}"),
        schedule_name: name.to_owned(),
        workflow_name: "tick".to_owned(),
        workflow_class_name: None,
        schedule: "* * * * * *".to_owned(),
        status: "ACTIVE".to_owned(),
        context: r#""ctx""#.to_owned(),
        last_fired_at: None,
        automatic_backfill: true,
        cron_timezone: Some("Europe/Berlin".to_owned()),
        queue_name: Some("orders".to_owned()),
        application_name: app.map(str::to_owned),
    }
}

async fn get(db: &TestStore, name: &str) -> Option<ScheduleRow> {
    db.run(GetSchedule {
        schedule_name: name.to_owned(),
    })
    .await
}

fn names(rows: &[ScheduleRow]) -> Vec<&str> {
    rows.iter().map(|r| r.schedule_name.as_str()).collect()
}

conformance! {
    /// A schedule is stored with every column as given and read back the same; a second
    /// schedule of that name is refused and changes nothing, while re-running the same
    /// insert (same id: a retry after an unseen commit) answers that it landed.
    async fn a_schedule_is_stored_once_by_name(db) {
        let row = schedule("nightly", Some("app"));
        assert!(db.run(CreateSchedule { row: row.clone(), replace_definition: false }).await);
        assert_eq!(get(db, "nightly").await, Some(row.clone()));
        assert!(db.run(CreateSchedule { row: row.clone(), replace_definition: false }).await, "retry");
        let mut other = schedule("nightly", Some("app"));
        other.schedule_id = "another".to_owned();
        other.schedule = "0 0 * * *".to_owned();
        assert!(!db.run(CreateSchedule { row: other, replace_definition: false }).await);
        assert_eq!(get(db, "nightly").await, Some(row));
        assert_eq!(get(db, "missing").await, None);
        assert_eq!(db.count("SELECT COUNT(*) FROM workflow_schedules").await, 1);
    }

    /// Replacing a definition keeps the schedule's id, status, last tick and owner, and
    /// changes the rest (DBOS's upsert); an unowned row takes the new owner.
    async fn replacing_a_definition_keeps_identity_and_state(db) {
        let row = schedule("hourly", None);
        assert!(db.run(CreateSchedule { row: row.clone(), replace_definition: true }).await);
        assert!(db.run(SetScheduleStatus { schedule_name: "hourly".to_owned(), status: "PAUSED".to_owned() }).await);
        db.run(SetLastFired { schedule_name: "hourly".to_owned(), last_fired_at: "2026-01-01T00:00:00+00:00".to_owned() }).await;
        let mut new = schedule("hourly", Some("app"));
        new.schedule_id = "new-id".to_owned();
        new.schedule = "0 * * * *".to_owned();
        new.context = "null".to_owned();
        new.automatic_backfill = false;
        new.cron_timezone = None;
        new.queue_name = None;
        assert!(db.run(CreateSchedule { row: new.clone(), replace_definition: true }).await);
        let stored = get(db, "hourly").await.expect("stored");
        let expected = ScheduleRow {
            schedule_id: row.schedule_id.clone(),
            status: "PAUSED".to_owned(),
            last_fired_at: Some("2026-01-01T00:00:00+00:00".to_owned()),
            application_name: Some("app".to_owned()),
            ..new.clone()
        };
        assert_eq!(stored, expected);
        // An owned row keeps its owner.
        let mut again = new;
        again.application_name = Some("other".to_owned());
        assert!(db.run(CreateSchedule { row: again, replace_definition: true }).await);
        assert_eq!(get(db, "hourly").await.expect("stored").application_name.as_deref(), Some("app"));
    }

    /// An application lists its own schedules and the unowned ones, by name; without an
    /// application, every schedule.
    async fn schedules_are_listed_by_owner(db) {
        for (name, app) in [("c", Some("app")), ("a", None), ("b", Some("other")), ("d", Some("app"))] {
            assert!(db.run(CreateSchedule { row: schedule(name, app), replace_definition: false }).await);
        }
        let mine = db.run(ListSchedules { application_name: Some("app".to_owned()) }).await;
        assert_eq!(names(&mine), ["a", "c", "d"]);
        let all = db.run(ListSchedules { application_name: None }).await;
        assert_eq!(names(&all), ["a", "b", "c", "d"]);
    }

    /// Pause, resume, the last tick and delete change one schedule by name and say whether
    /// it exists; deleting leaves the others.
    async fn status_last_tick_and_delete(db) {
        for name in ["x", "y"] {
            assert!(db.run(CreateSchedule { row: schedule(name, None), replace_definition: false }).await);
        }
        let pause = |name: &str| SetScheduleStatus { schedule_name: name.to_owned(), status: "PAUSED".to_owned() };
        assert!(db.run(pause("x")).await);
        assert!(db.run(pause("x")).await, "idempotent");
        assert!(!db.run(pause("missing")).await);
        assert_eq!(get(db, "x").await.expect("x").status, "PAUSED");
        assert_eq!(get(db, "y").await.expect("y").status, "ACTIVE");
        assert!(db.run(SetScheduleStatus { schedule_name: "x".to_owned(), status: "ACTIVE".to_owned() }).await);
        assert_eq!(get(db, "x").await.expect("x").status, "ACTIVE");
        db.run(SetLastFired { schedule_name: "y".to_owned(), last_fired_at: "2026-03-29T03:00:00+02:00".to_owned() }).await;
        assert_eq!(get(db, "y").await.expect("y").last_fired_at.as_deref(), Some("2026-03-29T03:00:00+02:00"));
        assert_eq!(get(db, "x").await.expect("x").last_fired_at, None);
        assert!(db.run(DeleteSchedule { schedule_name: "x".to_owned() }).await);
        assert!(!db.run(DeleteSchedule { schedule_name: "x".to_owned() }).await);
        assert_eq!(get(db, "x").await, None);
        assert!(get(db, "y").await.is_some());
    }

    /// A tick is inserted once, `ENQUEUED`, with the schedule's name on its status row; a
    /// second insert of the same id (another process firing the same tick) changes nothing.
    async fn a_tick_is_inserted_once_with_its_schedule(db) {
        let id = "sched-nightly-2026-01-01T00:00:00+00:00";
        let tick = || InsertTick {
            workflow: workflow(id, WorkflowState::Enqueued),
            schedule_name: "nightly".to_owned(),
        };
        assert_eq!(db.run(tick()).await, InsertOutcome::Inserted);
        let mut other = tick();
        other.workflow.creator_xid = "another process".to_owned();
        other.schedule_name = "other".to_owned();
        assert!(matches!(db.run(other).await, InsertOutcome::Existing { .. }));
        assert_eq!(db.row(id).await.status, Some(WorkflowState::Enqueued));
        assert_eq!(
            db.lines(&format!("SELECT schedule_name FROM workflow_status WHERE workflow_uuid = '{id}'")).await,
            ["nightly"]
        );
    }
}
