//! `cairn workflow …`: list, get, steps, cancel, resume, fork, delete.

use cairn::{
    Client, ForkOptions, ListStepsOptions, ListWorkflowsOptions, SortOrder, StepInfo,
    WorkflowState, WorkflowStatus,
};
use serde_json::{Value, json};

use crate::args::{ListArgs, WorkflowCommand};
use crate::output::{Cell, Output, Table, duration_between, relative, relative_opt, time_json};
use crate::{Failure, Outcome};

/// Ids handled per call in bulk operations (one progress step each).
const CHUNK: usize = 100;

/// Run a `cairn workflow` subcommand.
pub async fn run(client: &Client, command: WorkflowCommand, output: &Output) -> Outcome {
    match command {
        WorkflowCommand::List(args) => list(client, args, output).await,
        WorkflowCommand::Get { id } => get(client, &id, output).await,
        WorkflowCommand::Steps { id } => steps(client, &id, output).await,
        WorkflowCommand::Cancel {
            ids,
            with_descendants,
        } => cancel(client, ids, with_descendants, output).await,
        WorkflowCommand::Resume { ids } => resume(client, ids, output).await,
        WorkflowCommand::Fork {
            id,
            step,
            new_id,
            app_version,
            queue,
        } => {
            let mut options = ForkOptions::default();
            if let Some(new_id) = new_id {
                options = options.with_id(new_id);
            }
            if let Some(version) = app_version {
                options = options.with_app_version(version);
            }
            if let Some(queue) = queue {
                options = options.with_queue(queue);
            }
            fork(client, &id, step, options, output).await
        }
        WorkflowCommand::Delete { ids, with_children } => {
            delete(client, ids, with_children, output).await
        }
    }
}

/// `workflow list`: newest first, filtered.
async fn list(client: &Client, args: ListArgs, output: &Output) -> Outcome {
    let mut options = ListWorkflowsOptions::new()
        .order(SortOrder::NewestFirst)
        .limit(args.limit)
        .offset(args.offset)
        .load_input(output.json)
        .load_output(output.json);
    for status in &args.status {
        options = options.status(parse_state(status)?);
    }
    if let Some(name) = args.name {
        options = options.name(name);
    }
    if let Some(queue) = args.queue {
        options = options.queue_name(queue);
    }
    if let Some(executor) = args.executor {
        options = options.executor_id(executor);
    }
    if let Some(version) = args.app_version {
        options = options.app_version(version);
    }
    for (key, value) in args.attribute {
        options = options.attribute(key, value);
    }
    options = match (args.since, args.until) {
        (Some(since), Some(until)) => options.created_in(since..until),
        (Some(since), None) => options.created_in(since..),
        (None, Some(until)) => options.created_in(..until),
        (None, None) => options,
    };
    let workflows = client.list_workflows(options).await.map_err(Failure::of)?;
    if output.json {
        let list: Vec<Value> = workflows.iter().map(|w| workflow_json(w, true)).collect();
        output.json(&Value::Array(list));
        return Ok(());
    }
    let mut table = Table::new(vec![
        "WORKFLOW ID",
        "NAME",
        "STATUS",
        "CREATED",
        "DURATION",
        "QUEUE",
        "EXECUTOR",
    ]);
    for w in &workflows {
        table.row(vec![
            w.workflow_id.clone().into(),
            w.name.clone().into(),
            output.status(w.state.as_str()),
            relative(w.created_at_ms).into(),
            duration_between(w.started_at_ms.or(Some(w.created_at_ms)), w.completed_at_ms).into(),
            optional(output, w.queue_name.as_deref()),
            optional(output, w.executor_id.as_deref()),
        ]);
    }
    table.print(output, "no workflows");
    Ok(())
}

/// A status name as the filter takes it (case-insensitive); an unknown one is refused.
fn parse_state(text: &str) -> Outcome<WorkflowState> {
    let upper = text.trim().to_ascii_uppercase();
    const KNOWN: [&str; 7] = [
        "PENDING",
        "ENQUEUED",
        "DELAYED",
        "SUCCESS",
        "ERROR",
        "CANCELLED",
        "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
    ];
    if !KNOWN.contains(&upper.as_str()) {
        return Err(Failure::Usage(format!(
            "unknown status `{text}`; expected one of {}",
            KNOWN.join(", ")
        )));
    }
    Ok(WorkflowState::parse(&upper))
}

/// A cell for an optional value, a dimmed `-` when absent.
fn optional(output: &Output, value: Option<&str>) -> Cell {
    match value {
        Some(v) if !v.is_empty() => v.to_owned().into(),
        _ => output.dim("-"),
    }
}

/// `workflow get`.
async fn get(client: &Client, id: &str, output: &Output) -> Outcome {
    let status = client.status(id).await.map_err(Failure::of)?;
    let value = workflow_json(&status, true);
    if output.json {
        output.json(&value);
        return Ok(());
    }
    let line = |key: &str, value: String| println!("{key:<20}{value}");
    line("workflow id", status.workflow_id.clone());
    line("status", output.status(status.state.as_str()).render());
    line("name", status.name.clone());
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    line("queue", or_dash(&status.queue_name));
    line("executor", or_dash(&status.executor_id));
    line("app version", or_dash(&status.app_version));
    line("application", or_dash(&status.application_name));
    line(
        "created",
        format!(
            "{} ({})",
            crate::output::rfc3339(status.created_at_ms).unwrap_or_default(),
            relative(status.created_at_ms)
        ),
    );
    line("started", relative_opt(status.started_at_ms));
    line("completed", relative_opt(status.completed_at_ms));
    line(
        "duration",
        duration_between(
            status.started_at_ms.or(Some(status.created_at_ms)),
            status.completed_at_ms,
        ),
    );
    line("recovery attempts", status.recovery_attempts.to_string());
    if let Some(parent) = &status.parent_workflow_id {
        line("parent", parent.clone());
    }
    if let Some(original) = &status.forked_from {
        line("forked from", original.clone());
    }
    if let Some(attributes) = &status.attributes {
        line("attributes", attributes.to_string());
    }
    for key in ["input", "output", "error"] {
        if let Some(v) = value.get(key).filter(|v| !v.is_null()) {
            line(key, compact(v));
        }
    }
    Ok(())
}

/// A JSON value on one line, cut at 200 characters.
fn compact(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}

/// A workflow as JSON, with the field names the crate docs list.
fn workflow_json(w: &WorkflowStatus, values: bool) -> Value {
    let mut value = json!({
        "workflow_id": w.workflow_id,
        "status": w.state.as_str(),
        "name": w.name,
        "queue_name": w.queue_name,
        "executor_id": w.executor_id,
        "app_version": w.app_version,
        "application_name": w.application_name,
        "created_at": time_json(Some(w.created_at_ms)),
        "updated_at": time_json(Some(w.updated_at_ms)),
        "started_at": time_json(w.started_at_ms),
        "completed_at": time_json(w.completed_at_ms),
        "duration_ms": match (w.started_at_ms.or(Some(w.created_at_ms)), w.completed_at_ms) {
            (Some(s), Some(e)) if e >= s => json!(e - s),
            _ => Value::Null,
        },
        "recovery_attempts": w.recovery_attempts,
        "parent_workflow_id": w.parent_workflow_id,
        "forked_from": w.forked_from,
        "deduplication_id": w.deduplication_id,
        "priority": w.priority,
        "schedule_name": w.schedule_name,
        "attributes": w.attributes,
    });
    if values && let Some(object) = value.as_object_mut() {
        let input = match w.input() {
            Ok(args) if w.raw_input.is_some() => Value::Array(args),
            _ => raw(w.raw_input.as_deref()),
        };
        let output = match w.output::<Value>() {
            Ok(Some(v)) => v,
            _ => raw(w.raw_output.as_deref()),
        };
        let error = match w.error() {
            Ok(Some(e)) => json!({ "name": e.name, "message": e.message }),
            _ => raw(w.raw_error.as_deref()),
        };
        object.insert("input".to_owned(), input);
        object.insert("output".to_owned(), output);
        object.insert("error".to_owned(), error);
    }
    value
}

/// A stored value Cairn could not decode: its JSON if it is JSON, else the text; `null` when
/// absent.
fn raw(text: Option<&str>) -> Value {
    match text {
        None => Value::Null,
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    }
}

/// `workflow steps`.
async fn steps(client: &Client, id: &str, output: &Output) -> Outcome {
    // An unknown id lists nothing in the API; the CLI says it is unknown.
    client.status(id).await.map_err(Failure::of)?;
    let steps = client
        .list_workflow_steps(id, ListStepsOptions::new())
        .await
        .map_err(Failure::of)?;
    if output.json {
        output.json(&Value::Array(steps.iter().map(step_json).collect()));
        return Ok(());
    }
    let mut table = Table::new(vec![
        "ID", "NAME", "STATUS", "STARTED", "DURATION", "RESULT",
    ]);
    for step in &steps {
        let (status, result) = match (&step.raw_error, &step.raw_output, &step.child_workflow_id) {
            (Some(error), _, _) => ("ERROR", compact(&raw(Some(error)))),
            (None, _, Some(child)) => ("SUCCESS", format!("child {child}")),
            (None, Some(out), None) => ("SUCCESS", compact(&raw(Some(out)))),
            (None, None, None) => ("SUCCESS", String::new()),
        };
        table.row(vec![
            step.function_id.to_string().into(),
            step.name.clone().into(),
            output.status(status),
            relative_opt(step.started_at_ms).into(),
            duration_between(step.started_at_ms, step.completed_at_ms).into(),
            truncate(&result, 60).into(),
        ]);
    }
    table.print(output, "no steps recorded");
    Ok(())
}

/// At most `n` characters of `text`.
fn truncate(text: &str, n: usize) -> String {
    if text.chars().count() > n {
        format!("{}…", text.chars().take(n).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// A step as JSON.
fn step_json(step: &StepInfo) -> Value {
    json!({
        "function_id": step.function_id,
        "name": step.name,
        "status": if step.raw_error.is_some() { "ERROR" } else { "SUCCESS" },
        "output": raw(step.raw_output.as_deref()),
        "error": raw(step.raw_error.as_deref()),
        "child_workflow_id": step.child_workflow_id,
        "started_at": time_json(step.started_at_ms),
        "completed_at": time_json(step.completed_at_ms),
        "duration_ms": match (step.started_at_ms, step.completed_at_ms) {
            (Some(s), Some(e)) if e >= s => json!(e - s),
            _ => Value::Null,
        },
    })
}

/// Refuse ids that name no workflow, before changing anything.
async fn check_exist(client: &Client, ids: &[String]) -> Outcome {
    let mut found = std::collections::HashSet::new();
    for chunk in ids.chunks(1000) {
        let options = ListWorkflowsOptions::new()
            .workflow_ids(chunk.iter().cloned())
            .load_input(false)
            .load_output(false);
        for w in client.list_workflows(options).await.map_err(Failure::of)? {
            found.insert(w.workflow_id);
        }
    }
    let missing: Vec<&str> = ids
        .iter()
        .filter(|id| !found.contains(*id))
        .map(String::as_str)
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [one] => Err(Failure::Operation(format!("unknown workflow id {one}"))),
        many => Err(Failure::Operation(format!(
            "unknown workflow ids {}",
            many.join(", ")
        ))),
    }
}

/// The ids once each, in the order given.
fn dedup(ids: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// A progress bar for a bulk operation over `n` ids: only when it takes several calls (and
/// stderr is a terminal).
fn bulk_bar(output: &Output, n: usize, what: &str) -> indicatif::ProgressBar {
    if n > CHUNK {
        output.progress_bar(n as u64, what)
    } else {
        indicatif::ProgressBar::hidden()
    }
}

/// `workflow cancel`.
async fn cancel(client: &Client, ids: Vec<String>, descendants: bool, output: &Output) -> Outcome {
    let ids = dedup(ids);
    check_exist(client, &ids).await?;
    let bar = bulk_bar(output, ids.len(), "cancelling");
    let mut cancelled = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let done = client
            .cancel_workflows(chunk.iter().cloned(), descendants)
            .await
            .map_err(Failure::of)?;
        cancelled.extend(done);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if output.json {
        output.json(&json!({ "cancelled": cancelled }));
    } else if cancelled.is_empty() {
        println!("nothing to cancel: every workflow given had finished");
    } else {
        println!(
            "cancelled {} workflow(s): {}",
            cancelled.len(),
            cancelled.join(", ")
        );
    }
    Ok(())
}

/// `workflow resume`.
async fn resume(client: &Client, ids: Vec<String>, output: &Output) -> Outcome {
    let ids = dedup(ids);
    check_exist(client, &ids).await?;
    let bar = bulk_bar(output, ids.len(), "resuming");
    for chunk in ids.chunks(CHUNK) {
        client
            .resume_workflows::<Value, _, _>(chunk.iter().cloned())
            .await
            .map_err(Failure::of)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if output.json {
        output.json(&json!({ "resumed": ids }));
    } else {
        println!("resumed {} workflow(s): {}", ids.len(), ids.join(", "));
    }
    Ok(())
}

/// `workflow fork`.
async fn fork(
    client: &Client,
    id: &str,
    step: u32,
    options: ForkOptions,
    output: &Output,
) -> Outcome {
    let handle = client
        .fork_workflow::<Value>(id, step, options)
        .await
        .map_err(Failure::of)?;
    if output.json {
        output.json(&json!({
            "workflow_id": handle.id(),
            "forked_from": id,
            "start_step": step,
        }));
    } else {
        println!("forked {id} from step {step} as {}", handle.id());
    }
    Ok(())
}

/// `workflow delete`.
async fn delete(client: &Client, ids: Vec<String>, children: bool, output: &Output) -> Outcome {
    let ids = dedup(ids);
    check_exist(client, &ids).await?;
    let bar = bulk_bar(output, ids.len(), "deleting");
    let mut deleted = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let done = client
            .delete_workflows(chunk.iter().cloned(), children)
            .await
            .map_err(Failure::of)?;
        deleted.extend(done);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if output.json {
        output.json(&json!({ "deleted": deleted }));
    } else {
        println!(
            "deleted {} workflow(s): {}",
            deleted.len(),
            deleted.join(", ")
        );
    }
    Ok(())
}
