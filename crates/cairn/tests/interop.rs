//! Interoperability with DBOS Transact 3.4, the real thing: the Python package `dbos==3.4.0`
//! run from `$CAIRN_DBOS_PYTHON` (`scripts/python-venv.sh` makes one). Cairn's system database
//! must have DBOS's catalogue exactly, Cairn must run on a database DBOS created without
//! altering it, and DBOS's client must read what Cairn wrote.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::dbos::{dbos_url, run_cli, run_python, sqlite_path};
use common::{Backend, TestDb};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Workflows
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum InteropError {
    #[error(transparent)]
    Cairn(#[from] cairn::Error),
}

#[cairn::step]
async fn compose(name: String) -> Result<String, InteropError> {
    Ok(format!("Hello, {name}!"))
}

#[cairn::step]
async fn measure(text: String) -> Result<usize, InteropError> {
    Ok(text.chars().count())
}

/// The output of [`greet`]: a struct, so DBOS has to decode a JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Greeting {
    text: String,
    length: usize,
    tags: Vec<String>,
    shouted: Option<bool>,
}

#[cairn::workflow]
async fn greet(name: String) -> Result<Greeting, InteropError> {
    let text = compose(name).await?;
    let length = measure(text.clone()).await?;
    Ok(Greeting {
        text,
        length,
        tags: vec!["interop".into(), "dbos".into()],
        shouted: None,
    })
}

#[cairn::workflow]
async fn double(n: i64) -> Result<i64, InteropError> {
    let text = compose(n.to_string()).await?;
    Ok(n * 2 + measure(text).await? as i64 - 9)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// A Postgres system database Cairn creates has exactly the catalogue of one DBOS 3.4 creates:
/// the same tables, columns, constraints, indexes, functions, triggers and migration version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairns_schema_equals_dbos_schema_on_postgres() {
    schemas_equal(Backend::Postgres).await;
}

/// A SQLite system database Cairn creates has exactly the catalogue of one DBOS 3.4 creates:
/// the same tables, columns, indexes, foreign keys, index SQL and migration version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairns_schema_equals_dbos_schema_on_sqlite() {
    schemas_equal(Backend::Sqlite).await;
}

async fn schemas_equal(backend: Backend) {
    let by_dbos = TestDb::new(backend);
    let by_cairn = TestDb::new(backend);
    dbos_migrate(&by_dbos).await;
    let app = by_cairn.launch().await;
    app.shutdown().await.expect("shutdown");

    let expected = catalogue(&by_dbos).await;
    let actual = catalogue(&by_cairn).await;
    by_dbos.drop_db().await;
    by_cairn.drop_db().await;
    assert_same_catalogue(
        "created by DBOS 3.4",
        &expected,
        "created by Cairn",
        &actual,
    );
}

/// Cairn launches on a system database DBOS created, runs a workflow there, and leaves the
/// schema exactly as DBOS made it (no migration, no extra object).
async fn cairn_launches_on_a_database_dbos_created_without_changing_it(db: &TestDb) {
    dbos_migrate(db).await;
    let before = catalogue(db).await;

    let app = db.launch().await;
    let handle = app.start(double, 21).await.expect("start");
    assert_eq!(handle.result().await.expect("result"), 42 + 10 - 9);
    let status = handle.status().await.expect("status");
    assert_eq!(status.state, cairn::WorkflowState::Success);
    app.shutdown().await.expect("shutdown");

    let after = catalogue(db).await;
    assert_same_catalogue(
        "created by DBOS 3.4",
        &before,
        "after Cairn ran a workflow on it",
        &after,
    );
}

/// DBOS's own CLI (`dbos workflow list/get/steps`) reads Cairn's workflows, decoding their
/// inputs, outputs and steps.
async fn the_dbos_cli_lists_and_inspects_cairn_workflows(db: &TestDb) {
    let app = db.launch().await;
    let handle = app
        .start(greet, "Grace Hopper".to_owned())
        .await
        .expect("start");
    let output = serde_json::to_value(handle.result().await.expect("result")).expect("encode");
    let id = handle.id().to_owned();
    app.shutdown().await.expect("shutdown");
    let url = dbos_url(db);

    let listed = run_cli(&["workflow", "list", "-s", &url]).await;
    let listed = listed.as_array().expect("a list");
    let ours = listed
        .iter()
        .find(|w| w["workflow_id"] == json!(id))
        .expect("listed");
    assert_eq!(ours["status"], json!("SUCCESS"));
    assert_eq!(ours["name"], json!("greet"));
    assert_eq!(
        ours["input"],
        json!({"args": ["Grace Hopper"], "kwargs": {}})
    );
    assert_eq!(ours["output"], output);

    let got = run_cli(&["workflow", "get", "-s", &url, &id]).await;
    assert_eq!(got["workflow_id"], json!(id), "{got:#}");
    assert_eq!(got["output"], output, "{got:#}");

    let steps = run_cli(&["workflow", "steps", "-s", &url, &id]).await;
    let names: Vec<_> = steps
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["function_name"].clone())
        .collect();
    assert_eq!(names, vec![json!("compose"), json!("measure")]);
}

#[cairn::step]
async fn greet_once(name: String) -> Result<String, InteropError> {
    Ok(format!("hello {name}"))
}

#[cairn::workflow]
async fn greet_then_wait(name: String) -> Result<String, InteropError> {
    let greeting = greet_once(name).await?;
    cairn::set_event("waiting", &true).await?;
    let reply = cairn::recv::<String>("reply", std::time::Duration::from_secs(60)).await?;
    Ok(format!("{greeting}, {}", reply.unwrap_or_default()))
}

/// A workflow cancelled in Cairn and resumed with `dbos workflow resume` (which puts it on
/// DBOS's internal queue) is picked up by the running Cairn application and continues from
/// its last checkpoint.
async fn a_workflow_resumed_with_the_dbos_cli_continues_in_cairn(db: &TestDb) {
    let app = db.launch().await;
    let handle = app
        .start(greet_then_wait, "Alan".to_owned())
        .await
        .expect("start");
    let waiting: Option<bool> = app
        .get_event(handle.id(), "waiting", std::time::Duration::from_secs(30))
        .await
        .expect("event");
    assert_eq!(waiting, Some(true));
    app.cancel(handle.id()).await.expect("cancel");
    assert!(matches!(
        handle.result().await,
        Err(cairn::Error::Cancelled(_))
    ));

    run_cli(&["workflow", "resume", "-s", &dbos_url(db), handle.id()]).await;
    app.send(handle.id(), "reply", &"welcome back")
        .await
        .expect("send");
    assert_eq!(
        handle.result().await.expect("result"),
        "hello Alan, welcome back"
    );
    let steps = app.list_steps(handle.id()).await.expect("steps");
    assert_eq!(steps.iter().filter(|s| s.name == "greet_once").count(), 1);
    app.shutdown().await.expect("shutdown");
}

/// DBOS's client reads a workflow Cairn ran: its status, name, input, result (a struct,
/// decoded from portable JSON) and its steps in order, with their outputs.
async fn dbos_reads_cairn_workflows(db: &TestDb) {
    let app = db.launch().await;
    let name = "Ada Lovelace".to_owned();
    let handle = app.start(greet, name.clone()).await.expect("start");
    let output = handle.result().await.expect("result");
    let id = handle.id().to_owned();
    let cairn_steps = app.list_steps(&id).await.expect("steps");
    app.shutdown().await.expect("shutdown");

    let seen = run_python("read_workflow.py", &[&dbos_url(db), &id]).await;

    let expected_output = serde_json::to_value(&output).expect("encode output");
    let status = &seen["status"];
    assert_eq!(status["workflow_id"], json!(id), "{seen:#}");
    assert_eq!(status["status"], json!("SUCCESS"), "{seen:#}");
    assert_eq!(status["name"], json!("greet"), "{seen:#}");
    assert_eq!(
        status["input"],
        json!({"args": [name], "kwargs": {}}),
        "{seen:#}"
    );
    assert_eq!(status["output"], expected_output, "{seen:#}");
    assert_eq!(status["error"], Value::Null, "{seen:#}");
    assert_eq!(seen["result"], expected_output, "{seen:#}");
    assert_eq!(
        seen["listed"].as_array().map(Vec::len),
        Some(1),
        "list_workflows finds it once: {seen:#}"
    );
    assert_eq!(
        seen["listed"][0], *status,
        "list_workflows and get_status agree"
    );

    let steps = seen["steps"].as_array().expect("steps array");
    let dbos_view: Vec<(i64, &str)> = steps
        .iter()
        .map(|s| {
            (
                s["function_id"].as_i64().unwrap_or(-1),
                s["function_name"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(dbos_view, vec![(1, "compose"), (2, "measure")], "{seen:#}");
    for (dbos_step, cairn_step) in steps.iter().zip(&cairn_steps) {
        let cairn_output: Value =
            serde_json::from_str(cairn_step.raw_output.as_deref().expect("step output"))
                .expect("json");
        assert_eq!(
            dbos_step["output"], cairn_output,
            "step {} as DBOS decodes it",
            cairn_step.name
        );
        assert_eq!(dbos_step["error"], Value::Null);
    }
    assert_eq!(steps[0]["output"], json!(output.text));
    assert_eq!(steps[1]["output"], json!(output.length));
}

both_backends!(
    cairn_launches_on_a_database_dbos_created_without_changing_it,
    dbos_reads_cairn_workflows,
    the_dbos_cli_lists_and_inspects_cairn_workflows,
    a_workflow_resumed_with_the_dbos_cli_continues_in_cairn
);

// ---------------------------------------------------------------------------------------------
// Running DBOS
// ---------------------------------------------------------------------------------------------

/// Create the system database as DBOS 3.4 does (`DBOS.migrate`).
async fn dbos_migrate(db: &TestDb) {
    run_python("migrate.py", &[&dbos_url(db)]).await;
}

// ---------------------------------------------------------------------------------------------
// Catalogues
// ---------------------------------------------------------------------------------------------

/// A database's catalogue: one entry per schema object or attribute, keyed by what it is
/// (`column dbos.workflow_status.status`), valued by everything the catalogue says about it.
type Catalogue = BTreeMap<String, String>;

async fn catalogue(db: &TestDb) -> Catalogue {
    match db.backend {
        Backend::Postgres => postgres_catalogue(&db.url).await,
        Backend::Sqlite => {
            let path = sqlite_path(db);
            tokio::task::spawn_blocking(move || sqlite_catalogue(&path))
                .await
                .expect("join")
        }
    }
}

/// Schemas that belong to Postgres itself, not to the application.
const PG_USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'";

async fn postgres_catalogue(url: &str) -> Catalogue {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to postgres");
    tokio::spawn(connection);
    let mut cat = Catalogue::new();
    // Every query returns (key, description) as text.
    let queries = [
        format!("SELECT 'schema ' || n.nspname, '' FROM pg_namespace n WHERE {PG_USER_SCHEMAS}"),
        format!(
            "SELECT 'relation ' || n.nspname || '.' || c.relname,
                    'kind=' || c.relkind::text || ' persistence=' || c.relpersistence::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {PG_USER_SCHEMAS} AND c.relkind NOT IN ('i', 'I')"
        ),
        "SELECT 'column ' || table_schema || '.' || table_name || '.' || column_name,
                concat_ws(' ',
                  'position=' || ordinal_position, 'data_type=' || data_type, 'udt=' || udt_name,
                  'max_length=' || coalesce(character_maximum_length::text, '-'),
                  'precision=' || coalesce(numeric_precision::text, '-'),
                  'scale=' || coalesce(numeric_scale::text, '-'),
                  'default=' || coalesce(column_default, '-'), 'nullable=' || is_nullable,
                  'identity=' || is_identity, 'generated=' || is_generated)
         FROM information_schema.columns
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            .to_owned(),
        format!(
            "SELECT 'constraint ' || n.nspname || '.' || coalesce(c.relname, '-') || '.' || k.conname,
                    'type=' || k.contype::text || ' ' || pg_get_constraintdef(k.oid)
                    || ' deferrable=' || k.condeferrable || ' deferred=' || k.condeferred
             FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
             LEFT JOIN pg_class c ON c.oid = k.conrelid
             WHERE {PG_USER_SCHEMAS}"
        ),
        "SELECT 'index ' || schemaname || '.' || tablename || '.' || indexname, indexdef
         FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            .to_owned(),
        format!(
            "SELECT 'function ' || n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                    concat_ws(' ', 'kind=' || p.prokind::text, 'returns=' || pg_get_function_result(p.oid),
                      'language=' || l.lanname, 'volatility=' || p.provolatile::text, 'strict=' || p.proisstrict,
                      'security_definer=' || p.prosecdef,
                      'defaults=' || coalesce(pg_get_expr(p.proargdefaults, 0), '-'),
                      'config=' || coalesce(array_to_string(p.proconfig, ','), '-'))
                    || E'\n' || p.prosrc
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
             WHERE {PG_USER_SCHEMAS}"
        ),
        format!(
            "SELECT 'trigger ' || n.nspname || '.' || c.relname || '.' || t.tgname,
                    pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE {PG_USER_SCHEMAS} AND NOT t.tgisinternal"
        ),
        "SELECT 'sequence ' || sequence_schema || '.' || sequence_name,
                concat_ws(' ', data_type, 'start=' || start_value, 'min=' || minimum_value,
                  'max=' || maximum_value, 'increment=' || increment, 'cycle=' || cycle_option)
         FROM information_schema.sequences"
            .to_owned(),
        "SELECT 'view ' || table_schema || '.' || table_name, view_definition
         FROM information_schema.views WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            .to_owned(),
        "SELECT 'extension ' || e.extname, 'schema=' || n.nspname
         FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'"
            .to_owned(),
    ];
    for sql in &queries {
        for row in client
            .query(sql.as_str(), &[])
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"))
        {
            insert_unique(&mut cat, row.get(0), row.get(1));
        }
    }
    // Each system schema's migration version, a row DBOS reads to decide what to migrate.
    let schemas = client
        .query(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'dbos_migrations'
             AND table_schema NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .expect("find dbos_migrations");
    for row in schemas {
        let schema: String = row.get(0);
        let sql = format!(
            "SELECT coalesce(string_agg(version::text, ',' ORDER BY version), '') FROM \"{schema}\".dbos_migrations"
        );
        let versions: String = client
            .query_one(sql.as_str(), &[])
            .await
            .expect("read dbos_migrations")
            .get(0);
        insert_unique(
            &mut cat,
            format!("rows {schema}.dbos_migrations"),
            format!("version={versions}"),
        );
    }
    cat
}

fn sqlite_catalogue(path: &Path) -> Catalogue {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open sqlite");
    let mut cat = Catalogue::new();
    let rows = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Vec<Vec<rusqlite::types::Value>> {
        let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
        let n = stmt.column_count();
        stmt.query_map(params, |row| {
            (0..n)
                .map(|i| row.get::<_, rusqlite::types::Value>(i))
                .collect()
        })
        .and_then(Iterator::collect)
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
    };

    let objects = rows(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
        &[],
    );
    for object in &objects {
        let (kind, name, table, sql) = (
            text(&object[0]),
            text(&object[1]),
            text(&object[2]),
            text(&object[3]),
        );
        insert_unique(
            &mut cat,
            format!("object {kind} {name}"),
            format!("on {table}"),
        );
        if kind != "table" && sql != "NULL" {
            insert_unique(&mut cat, format!("{kind} sql {name}"), normalize_sql(&sql));
        }
        if kind != "table" {
            continue;
        }
        for column in rows(
            "SELECT cid, name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?1)",
            &[&name],
        ) {
            insert_unique(
                &mut cat,
                format!("column {name}.{}", text(&column[1])),
                format!(
                    "cid={} type={} notnull={} default={} pk={} hidden={}",
                    text(&column[0]),
                    text(&column[2]),
                    text(&column[3]),
                    text(&column[4]),
                    text(&column[5]),
                    text(&column[6])
                ),
            );
        }
        for index in rows(
            "SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1)",
            &[&name],
        ) {
            let index_name = text(&index[0]);
            let columns: Vec<String> = rows(
                "SELECT seqno, cid, name, \"desc\", coll, key FROM pragma_index_xinfo(?1)",
                &[&index_name],
            )
            .iter()
            .map(|c| format!("({})", c.iter().map(text).collect::<Vec<_>>().join(",")))
            .collect();
            insert_unique(
                &mut cat,
                format!("index {name}.{index_name}"),
                format!(
                    "unique={} origin={} partial={} columns={}",
                    text(&index[1]),
                    text(&index[2]),
                    text(&index[3]),
                    columns.join(" ")
                ),
            );
        }
        // A foreign key is identified by its columns (its id is only its declaration order).
        let mut keys: BTreeMap<String, (Vec<String>, Vec<String>, String)> = BTreeMap::new();
        for fk in rows(
            "SELECT id, seq, \"table\", \"from\", \"to\", on_update, on_delete, \"match\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
            &[&name],
        ) {
            let entry = keys.entry(text(&fk[0])).or_default();
            entry.0.push(text(&fk[3]));
            entry.1.push(text(&fk[4]));
            entry.2 = format!(
                "{} on_update={} on_delete={} match={}",
                text(&fk[2]),
                text(&fk[5]),
                text(&fk[6]),
                text(&fk[7])
            );
        }
        for (from, to, target) in keys.into_values() {
            insert_unique(
                &mut cat,
                format!("foreign key {name}({})", from.join(",")),
                format!("references {target} ({})", to.join(",")),
            );
        }
        // CHECK constraints appear only in the table's SQL.
        let checks = check_clauses(&normalize_sql(&sql));
        if !checks.is_empty() {
            insert_unique(&mut cat, format!("checks {name}"), checks.join(" ; "));
        }
    }
    if objects
        .iter()
        .any(|o| text(&o[0]) == "table" && text(&o[1]) == "dbos_migrations")
    {
        let versions = rows("SELECT version FROM dbos_migrations ORDER BY version", &[]);
        let versions: Vec<String> = versions.iter().map(|r| text(&r[0])).collect();
        insert_unique(
            &mut cat,
            "rows dbos_migrations".to_owned(),
            format!("version={}", versions.join(",")),
        );
    }
    cat
}

fn text(value: &rusqlite::types::Value) -> String {
    use rusqlite::types::Value as V;
    match value {
        V::Null => "NULL".to_owned(),
        V::Integer(i) => i.to_string(),
        V::Real(f) => f.to_string(),
        V::Text(s) => s.clone(),
        V::Blob(b) => format!("<{} bytes>", b.len()),
    }
}

/// SQL text without what does not change its meaning: identifier quotes, keyword and
/// identifier case, and layout. String literals are kept exactly.
fn normalize_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_literal = false;
    let mut pending_space = false;
    for c in sql.chars() {
        if in_literal {
            out.push(c);
            in_literal = c != '\'';
            continue;
        }
        match c {
            '"' | '`' | '[' | ']' => {}
            c if c.is_whitespace() => pending_space = true,
            _ => {
                let tight = matches!(c, '(' | ')' | ',' | '=')
                    || matches!(out.chars().last(), None | Some('(' | ',' | '='));
                if pending_space && !tight {
                    out.push(' ');
                }
                pending_space = false;
                in_literal = c == '\'';
                out.extend(c.to_lowercase());
            }
        }
    }
    out
}

/// The `check(…)` clauses of a normalized CREATE TABLE.
fn check_clauses(sql: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = sql;
    while let Some(at) = rest.find("check(").or_else(|| rest.find("check (")) {
        let clause = &rest[at..];
        let mut depth = 0;
        let mut end = clause.len();
        for (i, c) in clause.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        found.push(clause[..end].to_owned());
        rest = &clause[end..];
    }
    found.sort();
    found
}

fn insert_unique(cat: &mut Catalogue, key: String, value: String) {
    if let Some(previous) = cat.insert(key.clone(), value.clone()) {
        panic!("catalogue key `{key}` twice: `{previous}` and `{value}`");
    }
}

/// Assert two catalogues are equal, listing every entry missing, extra or different.
fn assert_same_catalogue(
    expected_label: &str,
    expected: &Catalogue,
    actual_label: &str,
    actual: &Catalogue,
) {
    assert!(
        !expected.is_empty(),
        "the catalogue {expected_label} is empty: nothing was created"
    );
    let mut diff = Vec::new();
    for (key, want) in expected {
        match actual.get(key) {
            None => diff.push(format!(
                "- missing {key}\n      {expected_label}: {}",
                indent(want)
            )),
            Some(got) if got != want => diff.push(format!(
                "~ differs {key}\n      {expected_label}: {}\n      {actual_label}: {}",
                indent(want),
                indent(got)
            )),
            Some(_) => {}
        }
    }
    for (key, got) in actual {
        if !expected.contains_key(key) {
            diff.push(format!(
                "+ extra {key}\n      {actual_label}: {}",
                indent(got)
            ));
        }
    }
    assert!(
        diff.is_empty(),
        "{} catalogue entries differ between the database {expected_label} (`-`: only there) and the one {actual_label} (`+`: only there):\n{}",
        diff.len(),
        diff.join("\n")
    );
}

fn indent(text: &str) -> String {
    text.replace('\n', "\n        ")
}
