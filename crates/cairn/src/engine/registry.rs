//! The workflows this program defines, registered by `#[cairn::workflow]` at link time.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::LazyLock;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::error::PortableError;

/// One `#[cairn::workflow]` function. Created by the macro; not for direct use.
#[doc(hidden)]
pub struct WorkflowRegistration {
    /// The workflow's name, as stored in `workflow_status.name`.
    pub name: &'static str,
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
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut by_name = HashMap::new();
    let mut by_type = HashMap::new();
    for registration in inventory::iter::<WorkflowRegistration> {
        if let Some(previous) = by_name.insert(registration.name, registration) {
            tracing::warn!(
                workflow = registration.name,
                "two workflows share the name `{}`; the later registration wins (previous hash {})",
                registration.name,
                previous.source_hash
            );
        }
        by_type.insert((registration.type_id)(), registration);
    }
    Registry { by_name, by_type }
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
