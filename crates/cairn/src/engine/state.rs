//! What workflow and step code can ask about where it runs: the application's state (values
//! given to the builder), the workflow's id and instance, the step's id and attempt.
//!
//! All of it is read from the running workflow's task-local context, which a step body
//! shares (it runs in its workflow's task). A task spawned with `tokio::spawn` does not
//! inherit it: read what it needs first and move it in.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use super::context::{WorkflowContext, current_step};
use crate::error::{Error, Result};

/// Values of distinct types, each shared (`Arc`), by type.
#[derive(Clone, Default)]
struct Values(HashMap<TypeId, (&'static str, Arc<dyn Any + Send + Sync>)>);

impl Values {
    fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        let entry = (std::any::type_name::<T>(), Arc::new(value) as _);
        self.0.insert(TypeId::of::<T>(), entry);
    }

    fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let (_, value) = self.0.get(&TypeId::of::<T>())?;
        Arc::clone(value).downcast::<T>().ok()
    }

    fn type_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.0.values().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names
    }
}

/// The state given to [`CairnBuilder`](crate::CairnBuilder): values for the whole
/// application, and values per named instance.
#[derive(Clone, Default)]
pub(crate) struct AppState {
    shared: Values,
    instances: BTreeMap<String, Values>,
}

impl AppState {
    /// Add (or replace) the application's value of type `T`.
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.shared.insert(value);
    }

    /// Add (or replace) instance `instance`'s value of type `T`.
    pub(crate) fn insert_for<T: Send + Sync + 'static>(&mut self, instance: String, value: T) {
        self.instances.entry(instance).or_default().insert(value);
    }

    /// Whether the builder configured this instance.
    pub(crate) fn has_instance(&self, instance: &str) -> bool {
        self.instances.contains_key(instance)
    }

    /// The value of type `T` for a workflow running as `instance` (the instance's own, else
    /// the application's), or for the application.
    pub(crate) fn get<T: Send + Sync + 'static>(&self, instance: Option<&str>) -> Result<Arc<T>> {
        instance
            .and_then(|name| self.instances.get(name))
            .and_then(Values::get::<T>)
            .or_else(|| self.shared.get::<T>())
            .ok_or_else(|| Error::MissingState {
                type_name: std::any::type_name::<T>(),
                instance: instance.map(str::to_owned),
            })
    }
}

/// Lists the types held (the values themselves need not be `Debug`).
impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let instances: BTreeMap<_, _> = self
            .instances
            .iter()
            .map(|(name, values)| (name, values.type_names()))
            .collect();
        f.debug_struct("AppState")
            .field("shared", &self.shared.type_names())
            .field("instances", &instances)
            .finish()
    }
}

/// The message of [`Error::MissingState`]: what was missing and how to provide it.
pub(crate) fn missing_state_message(type_name: &str, instance: Option<&str>) -> String {
    match instance {
        None => format!(
            "no application state of type `{type_name}`: give one with `Cairn::builder(..).state(value)`"
        ),
        Some(instance) => format!(
            "no application state of type `{type_name}` for instance `{instance}`: give one with \
             `Cairn::builder(..).instance_state(\"{instance}\", value)` (or for every instance \
             with `.state(value)`)"
        ),
    }
}

/// The application's state of type `T`, given to the builder with
/// [`CairnBuilder::state`](crate::CairnBuilder::state): a database pool, an HTTP client,
/// configuration — shared by every workflow and step, as axum hands handlers their `State`.
///
/// A workflow started as an instance ([`StartOptions::with_instance`](crate::StartOptions::with_instance))
/// gets its instance's value ([`CairnBuilder::instance_state`](crate::CairnBuilder::instance_state))
/// first, and the application's otherwise; its children run as the same instance unless they
/// are started as another.
///
/// Works in workflow code and in step bodies. Elsewhere — a step or workflow function called
/// as a plain function outside any workflow, or a task spawned from one — there is no
/// workflow to read it from: the call fails with [`Error::NotInWorkflow`], and the caller
/// should pass the value as an argument instead. A type that was not given fails with
/// [`Error::MissingState`] naming it.
///
/// ```no_run
/// # struct Pool;
/// # impl Pool { async fn insert(&self, _: u64) {} }
/// #[cairn::step]
/// async fn save(order: u64) -> Result<(), cairn::Error> {
///     let pool = cairn::state::<Pool>()?;
///     pool.insert(order).await;
///     Ok(())
/// }
///
/// # async fn launch() -> cairn::Result<()> {
/// let app = cairn::Cairn::builder("shop").state(Pool).launch().await?;
/// # Ok(()) }
/// ```
pub fn state<T: Send + Sync + 'static>() -> Result<Arc<T>> {
    let ctx = WorkflowContext::ambient().ok_or(Error::NotInWorkflow("cairn::state"))?;
    ctx.rt.state.get::<T>(ctx.instance.as_deref())
}

/// The id of the workflow this code runs in (in its steps too), or `None` outside any
/// workflow.
pub fn workflow_id() -> Option<String> {
    WorkflowContext::ambient().map(|ctx| ctx.workflow_id.clone())
}

/// The instance the running workflow was started as
/// ([`StartOptions::with_instance`](crate::StartOptions::with_instance), recorded as DBOS's
/// `config_name`), or `None` for a workflow started without one or outside any workflow.
pub fn instance() -> Option<String> {
    WorkflowContext::ambient().and_then(|ctx| ctx.instance.clone())
}

/// Whether this code runs as part of a workflow: in workflow code or in one of its step
/// bodies. `false` in a plain call outside any workflow.
pub fn in_workflow() -> bool {
    WorkflowContext::ambient().is_some()
}

/// The operation id of the step whose body is running (as recorded in
/// `operation_outputs.function_id`; DBOS's `DBOS.step_id`), or `None` outside a step body of
/// a workflow. Stable across retries and recoveries, so `(workflow_id, step_id)` makes an
/// idempotency key for a call to another system.
///
/// ```no_run
/// #[cairn::step(max_attempts = 3)]
/// async fn charge(order: u64) -> Result<String, cairn::Error> {
///     let key = format!("{}-{}", cairn::workflow_id().unwrap_or_default(), cairn::step_id().unwrap_or(0));
///     Ok(key) // send it with the payment request: a retry is recognised by the payee
/// }
/// ```
pub fn step_id() -> Option<i32> {
    current_step().map(|(function_id, _)| function_id)
}

/// Which attempt of the running step body this is, from 1 (DBOS's `current_attempt` counts
/// from 0), or `None` outside a step body of a workflow. A step recovered after a crash
/// starts again at 1.
pub fn step_attempt() -> Option<u32> {
    current_step().map(|(_, attempt)| attempt)
}
