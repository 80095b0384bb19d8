//! Listing workflows and steps on SQLite: the statement is assembled from the filters
//! present, every value bound as a numbered parameter.

use rusqlite::Connection;
use rusqlite::types::Value as Sql;
use serde_json::Value;

use super::ops::{checkpoint_columns, checkpoint_from_row, status_columns, workflow_from_row};
use super::{OnSqlite, failed};
use crate::error::{Error, Result};
use crate::store::list::{ListSteps, ListWorkflows, MsRange, glob_prefix};
use crate::store::{Checkpoint, WorkflowRow};

/// A `WHERE` clause being assembled, with its parameters.
#[derive(Default)]
struct Conditions {
    terms: Vec<String>,
    params: Vec<Sql>,
}

impl Conditions {
    /// The placeholder of a new parameter.
    fn bind(&mut self, value: impl Into<Sql>) -> String {
        self.params.push(value.into());
        format!("?{}", self.params.len())
    }

    /// `column IN (…)` over `values`, unless there are none.
    fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let list = self.placeholders(values);
        self.terms.push(format!("{column} IN ({list})"));
    }

    /// One placeholder per value, comma-separated.
    fn placeholders(&mut self, values: &[String]) -> String {
        values
            .iter()
            .map(|v| self.bind(v.clone()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `column` within `range` (inclusive).
    fn within(&mut self, column: &str, range: MsRange) {
        if let Some(min) = range.min {
            let p = self.bind(min);
            self.terms.push(format!("{column} >= {p}"));
        }
        if let Some(max) = range.max {
            let p = self.bind(max);
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

    /// One `json_each` test per attribute: the key is present with an equal scalar value.
    /// SQLite has no JSONB containment, so a nested value (object or array) is refused rather
    /// than compared differently from Postgres.
    fn attributes(&mut self, attributes: &[(String, Value)]) -> Result<()> {
        if attributes.is_empty() {
            return Ok(());
        }
        let mut tests = Vec::with_capacity(attributes.len());
        for (name, value) in attributes {
            let key = self.bind(name.clone());
            let matches = match value {
                Value::Null => "a.type = 'null'".to_owned(),
                Value::Bool(true) => "a.type = 'true'".to_owned(),
                Value::Bool(false) => "a.type = 'false'".to_owned(),
                Value::String(text) => {
                    format!("a.type = 'text' AND a.atom = {}", self.bind(text.clone()))
                }
                Value::Number(number) => {
                    let bound = match (number.as_i64(), number.as_f64()) {
                        (Some(n), _) => self.bind(n),
                        (None, Some(x)) => self.bind(x),
                        (None, None) => self.bind(number.to_string()),
                    };
                    format!("a.type IN ('integer', 'real') AND a.atom = {bound}")
                }
                Value::Array(_) | Value::Object(_) => {
                    return Err(Error::InvalidArgument {
                        argument: "attributes",
                        reason: format!(
                            "the value of attribute `{name}` is an object or array; SQLite system databases filter on scalar attribute values only (Postgres also matches nested values by containment)"
                        ),
                    });
                }
            };
            tests.push(format!(
                "EXISTS (SELECT 1 FROM json_each(s.attributes) a WHERE a.key = {key} AND {matches})"
            ));
        }
        // A stored value that is not JSON matches nothing (and must not fail the listing).
        self.terms.push(format!(
            "CASE WHEN json_valid(s.attributes) THEN ({}) ELSE 0 END",
            tests.join(" AND ")
        ));
        Ok(())
    }
}

/// The listing statement for `op`, and its parameters.
fn statement(op: &ListWorkflows) -> Result<(String, Vec<Sql>)> {
    let mut c = Conditions::default();
    if let Some(ids) = &op.workflow_ids {
        c.any_of("s.workflow_uuid", ids);
    }
    if !op.id_prefixes.is_empty() {
        let globs: Vec<String> = op
            .id_prefixes
            .iter()
            .map(|prefix| format!("s.workflow_uuid GLOB {}", c.bind(glob_prefix(prefix))))
            .collect();
        c.terms.push(format!("({})", globs.join(" OR ")));
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
        let list = c.placeholders(&op.application_names);
        c.terms.push(format!(
            "(s.application_name IN ({list}) OR s.application_name IS NULL)"
        ));
    }
    c.within("s.created_at", op.created);
    c.within("s.updated_at", op.updated);
    c.within("s.completed_at", op.completed);
    c.within("s.started_at_epoch_ms", op.dequeued);
    c.attributes(&op.attributes)?;
    if let Some(forked) = op.was_forked_from {
        let p = c.bind(forked);
        c.terms.push(format!("s.was_forked_from = {p}"));
    }
    c.null_or_not("s.forked_from", op.is_fork);
    c.null_or_not("s.parent_workflow_id", op.has_parent);

    let mut sql = format!(
        "SELECT {}, {}, {} FROM workflow_status s",
        status_columns!(),
        if op.load_input { "i.inputs" } else { "NULL" },
        if op.load_output {
            "o.output, o.error"
        } else {
            "NULL, NULL"
        },
    );
    if op.load_input {
        sql.push_str(" LEFT JOIN workflow_input i ON i.workflow_uuid = s.workflow_uuid");
    }
    if op.load_output {
        sql.push_str(" LEFT JOIN workflow_output o ON o.workflow_uuid = s.workflow_uuid");
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
    if op.limit.is_some() || op.offset.is_some() {
        // SQLite needs a LIMIT before an OFFSET; -1 is none.
        let limit = c.bind(op.limit.unwrap_or(-1));
        let offset = c.bind(op.offset.unwrap_or(0));
        sql.push_str(&format!(" LIMIT {limit} OFFSET {offset}"));
    }
    Ok((sql, c.params))
}

impl OnSqlite for ListWorkflows {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<WorkflowRow>> {
        if self.matches_nothing() {
            return Ok(Vec::new());
        }
        let (sql, params) = statement(self)?;
        conn.prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(rusqlite::params_from_iter(params), workflow_from_row)?
                    .collect()
            })
            .map_err(failed(self))
    }
}

impl OnSqlite for ListSteps {
    const WRITES: bool = false;

    fn on_sqlite(&self, conn: &Connection) -> Result<Vec<Checkpoint>> {
        conn.prepare_cached(concat!(
            "SELECT ",
            checkpoint_columns!(),
            " FROM operation_outputs WHERE workflow_uuid = ?1 ORDER BY function_id \
             LIMIT ?2 OFFSET ?3"
        ))
        .and_then(|mut stmt| {
            let params = rusqlite::params![
                self.workflow_id,
                self.limit.unwrap_or(-1),
                self.offset.unwrap_or(0)
            ];
            stmt.query_map(params, checkpoint_from_row)?.collect()
        })
        .map(|mut steps: Vec<Checkpoint>| {
            if !self.load_output {
                for step in &mut steps {
                    (step.output, step.error) = (None, None);
                }
            }
            steps
        })
        .map_err(failed(self))
    }
}
