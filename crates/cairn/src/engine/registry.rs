//! The workflows this program defines, registered by `#[cairn::workflow]` at link time.

use std::any::TypeId;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, PortableError, Result};

/// One `#[cairn::workflow]` function. Created by the macro; not for direct use.
#[doc(hidden)]
pub struct WorkflowRegistration {
    /// The workflow's name, as stored in `workflow_status.name`.
    pub name: &'static str,
    /// The function's Rust path (`shop::orders::checkout`), to name it in errors.
    pub path: &'static str,
    /// The `TypeId` of the annotated function item, so `app.start(f, …)` finds its entry.
    pub type_id: fn() -> TypeId,
    /// Decode the positional arguments, run the body, encode the outcome.
    pub run: fn(Vec<Value>) -> BoxFuture<'static, Result<String, PortableError>>,
    /// A hash of the function's tokens, folded into the default application version.
    pub source_hash: &'static str,
    /// Recovery attempts before the workflow is dead-lettered.
    pub max_recovery_attempts: u32,
}

inventory::collect!(WorkflowRegistration);

struct Registry {
    by_name: HashMap<&'static str, &'static WorkflowRegistration>,
    by_type: HashMap<TypeId, &'static WorkflowRegistration>,
    /// Names registered by more than one function: `(name, one path, another path)`.
    /// `launch()` refuses to start with any, since a stored workflow could not be told apart.
    duplicates: Vec<(&'static str, &'static str, &'static str)>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut by_name = HashMap::new();
    let mut by_type = HashMap::new();
    let mut duplicates = Vec::new();
    for registration in inventory::iter::<WorkflowRegistration> {
        if let Some(previous) = by_name.insert(registration.name, registration) {
            // Link order is arbitrary: name the two paths in a stable order.
            let (first, second) = if previous.path <= registration.path {
                (previous.path, registration.path)
            } else {
                (registration.path, previous.path)
            };
            duplicates.push((registration.name, first, second));
        }
        by_type.insert((registration.type_id)(), registration);
    }
    duplicates.sort_unstable();
    Registry {
        by_name,
        by_type,
        duplicates,
    }
});

/// The workflow registered under `name`.
pub(crate) fn by_name(name: &str) -> Option<&'static WorkflowRegistration> {
    REGISTRY.by_name.get(name).copied()
}

/// The workflow whose function item has this type.
pub(crate) fn by_type(type_id: TypeId) -> Option<&'static WorkflowRegistration> {
    REGISTRY.by_type.get(&type_id).copied()
}

/// Every registered workflow, sorted by name.
pub(crate) fn all() -> Vec<&'static WorkflowRegistration> {
    let mut all: Vec<_> = REGISTRY.by_name.values().copied().collect();
    all.sort_by_key(|r| r.name);
    all
}

/// Refuse a program in which two workflow functions share a stored name: recovery finds a
/// workflow's function by that name, so one of them would silently run the other's rows.
pub(crate) fn check_unique_names() -> Result<()> {
    match REGISTRY.duplicates.first() {
        None => Ok(()),
        Some(&(name, first, second)) => Err(Error::DuplicateWorkflowName {
            name,
            first,
            second,
        }),
    }
}

/// The future a `#[cairn::workflow]` function returns when it is called directly (inside a
/// workflow: a child, started exactly once across replays and waited for).
///
/// Only the macro's functions return one, which is how [`Cairn::start`](crate::Cairn::start)
/// and [`start_child_workflow`](crate::start_child_workflow) know at compile time that a
/// function was annotated. It is sealed: Cairn implements it, nothing else can.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the future of a `#[cairn::workflow]` function",
    note = "annotate the function with #[cairn::workflow]"
)]
pub trait WorkflowFuture: Future + Send + sealed::Sealed {}

mod sealed {
    /// Keeps [`WorkflowFuture`](super::WorkflowFuture) Cairn's own.
    pub trait Sealed {}
}

/// The future of a workflow function (see [`WorkflowFuture`]).
#[doc(hidden)]
#[must_use = "a workflow does nothing unless awaited"]
pub struct Workflow<F>(Pin<Box<F>>);

impl<F: Future> Future for Workflow<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<F> sealed::Sealed for Workflow<F> {}

impl<F: Future + Send> WorkflowFuture for Workflow<F> {}

/// Mark a workflow function's future (used by generated code). Boxed, since pinning it in
/// place would take unsafe code; it is only made by direct calls, never by `app.start`.
#[doc(hidden)]
pub fn workflow_future<F: Future + Send>(future: F) -> Workflow<F> {
    Workflow(Box::pin(future))
}

/// A type a workflow can take as an argument, as it is recorded when the workflow starts.
/// (Split from [`RecoveredArg`] so that a type that is neither reports once per side.)
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a Cairn workflow",
    label = "not `Serialize + Deserialize`",
    note = "a workflow's arguments are recorded, and decoded again when it is recovered: derive `serde::Serialize` and `serde::Deserialize` for it"
)]
pub trait RecordedArg: Serialize {}

impl<T: Serialize> RecordedArg for T {}

/// A type a workflow can take as an argument, as it is decoded when the workflow runs.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a Cairn workflow",
    label = "not `Serialize + Deserialize`",
    note = "a workflow's arguments are recorded, and decoded again when it is recovered: derive `serde::Serialize` and `serde::Deserialize` for it"
)]
pub trait RecoveredArg: DeserializeOwned {}

impl<T: DeserializeOwned> RecoveredArg for T {}

/// Encode argument `index` of `workflow` (used by generated code).
#[doc(hidden)]
pub fn encode_arg<T: RecordedArg>(value: &T, index: usize, workflow: &str) -> Result<Value> {
    crate::serialization::encode_arg(value, index, workflow)
}

/// Decode argument `index`, named `argument`, of `workflow` (used by generated code).
#[doc(hidden)]
pub fn decode_arg<T: RecoveredArg>(
    args: &mut [Value],
    index: usize,
    argument: &'static str,
    workflow: &str,
) -> Result<T> {
    crate::serialization::decode_arg(args, index, argument, workflow)
}
