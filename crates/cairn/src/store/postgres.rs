//! Placeholder: being written.
#![allow(unused_variables, dead_code)]
use super::*;

pub(crate) struct PostgresStore;

impl PostgresStore {
    pub(crate) async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        todo!()
    }
}

impl SystemDatabase for PostgresStore {
    async fn insert_workflow(&self, wf: &NewWorkflow) -> Result<InsertOutcome> { todo!() }
    async fn insert_child_workflow(&self, parent: &StepRecord, child: &NewWorkflow) -> Result<(RecordOutcome, InsertOutcome)> { todo!() }
    async fn record_step(&self, rec: &StepRecord) -> Result<RecordOutcome> { todo!() }
    async fn get_checkpoint(&self, workflow_id: &str, function_id: i32) -> Result<Option<Checkpoint>> { todo!() }
    async fn list_checkpoints(&self, workflow_id: &str) -> Result<Vec<Checkpoint>> { todo!() }
    async fn complete_workflow(&self, c: &Completion) -> Result<bool> { todo!() }
    async fn get_workflow(&self, workflow_id: &str) -> Result<Option<WorkflowRow>> { todo!() }
    async fn reclaim_pending(&self, executor_id: &str, app_version: &str, application_name: Option<&str>, new_owner: &str, now_ms: i64) -> Result<Vec<Reclaimed>> { todo!() }
    async fn dead_letter(&self, workflow_id: &str, owner_xid: &str, now_ms: i64) -> Result<bool> { todo!() }
    async fn register_app_version(&self, version: &str, application_name: Option<&str>, now_ms: i64) -> Result<()> { todo!() }
    async fn close(&self) {}
}
