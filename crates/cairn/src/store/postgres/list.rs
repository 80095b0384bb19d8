//! Listing workflows and steps on Postgres. The listing statement is assembled from the
//! filters present (every value a bound parameter; a list is one array parameter), so each
//! combination is one prepared statement per connection and the planner sees only the
//! conditions asked for.

use tokio_postgres::types::ToSql;

#[cfg(doc)]
use super::sql::CHECKPOINT_COLUMNS;
use super::sql::{STATUS_COLUMNS, Sql};
use super::{OnPostgres, PostgresStore, checkpoint_at, failed, workflow_row};
use crate::error::Result;
use crate::store::list::{ListSteps, ListWorkflows, MsRange, like_prefix};
use crate::store::{Checkpoint, WorkflowRow};

/// A `WHERE` clause being assembled, with its parameters.
#[derive(Default)]
struct Conditions {
    terms: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Conditions {
    /// The placeholder of a new parameter, cast to `ty` (so the statement's parameter types
    /// never depend on inference).
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static, ty: &str) -> String {
        self.params.push(Box::new(value));
        format!("${}::{ty}", self.params.len())
    }

    /// `column = ANY(…)` over `values`, unless there are none.
    fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let p = self.bind(values.to_vec(), "text[]");
        self.terms.push(format!("{column} = ANY({p})"));
    }

    /// `column` within `range` (inclusive).
    fn within(&mut self, column: &str, range: MsRange) {
        if let Some(min) = range.min {
            let p = self.bind(min, "int8");
            self.terms.push(format!("{column} >= {p}"));
        }
        if let Some(max) = range.max {
            let p = self.bind(max, "int8");
            self.terms.push(format!("{column} <= {p}"));
        }
    }

    /// `column IS NULL` or `IS NOT NULL`, if asked.
    fn null_or_not(&mut self, column: &str, present: Option<bool>) {
        match present {
            Some(true) => self.terms.push(format!("{column} IS NOT NULL")),
            Some(false) => self.terms.push(format!("{column} IS NULL")),
            None => {}
        }
    }
}

/// The listing statement for `op` in schema `q`, and its parameters.
fn statement(op: &ListWorkflows, q: &str) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut c = Conditions::default();
    if let Some(ids) = &op.workflow_ids {
        c.any_of("s.workflow_uuid", ids);
    }
    if !op.id_prefixes.is_empty() {
        let patterns: Vec<String> = op.id_prefixes.iter().map(|p| like_prefix(p)).collect();
        let p = c.bind(patterns, "text[]");
        c.terms.push(format!("s.workflow_uuid LIKE ANY({p})"));
    }
    c.any_of("s.status", &op.statuses);
    c.any_of("s.name", &op.names);
    c.any_of("s.queue_name", &op.queue_names);
    if op.queued_only {
        c.terms.push("s.queue_name IS NOT NULL".to_owned());
    }
    c.any_of("s.application_version", &op.app_versions);
    c.any_of("s.executor_id", &op.executor_ids);
    c.any_of("s.parent_workflow_id", &op.parent_workflow_ids);
    c.any_of("s.forked_from", &op.forked_from);
    c.any_of("s.authenticated_user", &op.users);
    c.any_of("s.schedule_name", &op.schedule_names);
    if !op.application_names.is_empty() {
        let p = c.bind(op.application_names.clone(), "text[]");
        c.terms.push(format!(
            "(s.application_name = ANY({p}) OR s.application_name IS NULL)"
        ));
    }
    c.within("s.created_at", op.created);
    c.within("s.updated_at", op.updated);
    c.within("s.completed_at", op.completed);
    c.within("s.started_at_epoch_ms", op.dequeued);
    if !op.attributes.is_empty() {
        // `@>` is what the GIN index on `attributes` serves.
        let p = c.bind(op.attributes_object().to_string(), "text");
        c.terms.push(format!("s.attributes @> {p}::jsonb"));
    }
    if let Some(forked) = op.was_forked_from {
        let p = c.bind(forked, "bool");
        c.terms.push(format!("s.was_forked_from = {p}"));
    }
    c.null_or_not("s.forked_from", op.is_fork);
    c.null_or_not("s.parent_workflow_id", op.has_parent);

    let mut sql = format!(
        "SELECT {STATUS_COLUMNS}, {}, {} FROM {q}.workflow_status s",
        if op.load_input {
            "i.inputs"
        } else {
            "NULL::text"
        },
        if op.load_output {
            "o.output, o.error"
        } else {
            "NULL::text, NULL::text"
        },
    );
    if op.load_input {
        sql.push_str(&format!(
            " LEFT JOIN {q}.workflow_input i ON i.workflow_uuid = s.workflow_uuid"
        ));
    }
    if op.load_output {
        sql.push_str(&format!(
            " LEFT JOIN {q}.workflow_output o ON o.workflow_uuid = s.workflow_uuid"
        ));
    }
    if !c.terms.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&c.terms.join(" AND "));
    }
    sql.push_str(if op.newest_first {
        " ORDER BY s.created_at DESC"
    } else {
        " ORDER BY s.created_at"
    });
    if let Some(limit) = op.limit {
        let p = c.bind(limit, "int8");
        sql.push_str(&format!(" LIMIT {p}"));
    }
    if let Some(offset) = op.offset {
        let p = c.bind(offset, "int8");
        sql.push_str(&format!(" OFFSET {p}"));
    }
    (sql, c.params)
}

impl OnPostgres for ListWorkflows {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<WorkflowRow>> {
        if self.matches_nothing() {
            return Ok(Vec::new());
        }
        let (sql, params) = statement(self, db.sql.schema());
        let params: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let client = db.checkout(self).await?;
        let result = match client.prepare_cached(&sql).await {
            Ok(statement) => client.query(&statement, &params).await,
            Err(e) => Err(e),
        };
        let rows = result.map_err(|e| failed(&db.pool, client, e, self))?;
        rows.iter().map(workflow_row).collect()
    }
}

/// `$1` workflow, `$2` limit (NULL: all), `$3` offset, `$4` whether to read outputs.
/// The columns are [`CHECKPOINT_COLUMNS`]'s, in its order.
static LIST_STEPS: Sql = Sql(|q| {
    format!(
        "SELECT function_id, function_name, CASE WHEN $4::bool THEN output END, \
             CASE WHEN $4::bool THEN error END, child_workflow_id, serialization, \
             started_at_epoch_ms, completed_at_epoch_ms \
         FROM {q}.operation_outputs WHERE workflow_uuid = $1 \
         ORDER BY function_id LIMIT $2::int8 OFFSET $3::int8"
    )
});

impl OnPostgres for ListSteps {
    /// One statement.
    async fn on_postgres(&self, db: &PostgresStore) -> Result<Vec<Checkpoint>> {
        let offset = self.offset.unwrap_or(0);
        let rows = db
            .query(
                &LIST_STEPS,
                &[&self.workflow_id, &self.limit, &offset, &self.load_output],
                self,
            )
            .await?;
        rows.iter().map(|row| checkpoint_at(row, 0)).collect()
    }
}
