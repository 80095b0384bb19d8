//! Durable timers: a sleep's wake-up time is recorded, so a recovered workflow wakes at the
//! original time — on SQLite and on Postgres.

mod common;

use std::time::{Duration, Instant};

use common::TestDb;

#[cairn::workflow]
async fn nap(millis: u64) -> Result<u64, cairn::Error> {
    cairn::sleep(Duration::from_millis(millis)).await?;
    Ok(millis)
}

/// Wait until the workflow has recorded its sleep (bounded; the test fails if it never does).
async fn until_sleep_recorded(app: &cairn::Cairn, id: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let steps = app.list_steps(id).await.unwrap();
        if let Some(step) = steps.iter().find(|s| s.name == "DBOS.sleep") {
            return step.raw_output.as_deref().unwrap().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "the sleep was never recorded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A sleep interrupted by the loss of its process wakes at the recorded time after recovery,
/// not a full duration after the restart.
async fn a_recovered_sleep_wakes_at_the_original_time(db: &TestDb) {
    let app = db
        .builder("cairn-test")
        .shutdown_grace(Duration::from_millis(10))
        .launch()
        .await
        .unwrap();
    let started = std::time::SystemTime::now();
    let handle = app.start(nap, 2000).await.unwrap();
    let id = handle.id().to_owned();
    let wake_at = until_sleep_recorded(&app, &id).await;
    let started_secs = started
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (wake_at - started_secs - 2.0).abs() < 0.5,
        "recorded wake-up {wake_at} for a start at {started_secs}"
    );
    app.shutdown().await.unwrap();
    // The process stays down for a second of the two-second sleep (the "kill at 1 s" of the
    // scenario); a sleep that restarted would then wake a second late.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let app = db.launch().await;
    assert_eq!(
        app.retrieve::<u64>(&id)
            .await
            .unwrap()
            .result()
            .await
            .unwrap(),
        2000
    );
    let woke = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        woke >= wake_at - 0.01,
        "woke at {woke}, before the recorded {wake_at}"
    );
    assert!(
        woke < wake_at + 0.5,
        "woke at {woke}, long after the recorded {wake_at}: the sleep restarted"
    );
    let steps = app.list_steps(&id).await.unwrap();
    assert_eq!(steps.len(), 1, "one recorded sleep, not two");
    app.shutdown().await.unwrap();
}

both_backends!(a_recovered_sleep_wakes_at_the_original_time);
