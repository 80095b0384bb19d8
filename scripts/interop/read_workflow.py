"""Read one workflow through DBOS 3.4's client API and print what DBOS sees, as JSON.

Usage: python read_workflow.py <system database URL> <workflow id>

The last line of stdout is a JSON object:
  {"listed": [status…], "status": status, "result": value, "steps": [step…]}
where a status is {workflow_id, status, name, input: {args, kwargs}, output, error, …}
and a step is {function_id, function_name, output, error, child_workflow_id}.
"""

import json
import sys

from dbos import DBOSClient

from migrate import sqlalchemy_url


def status_json(status):
    return {
        "workflow_id": status.workflow_id,
        "status": status.status,
        "name": status.name,
        "input": None if status.input is None else {
            "args": list(status.input["args"]),
            "kwargs": status.input["kwargs"],
        },
        "output": status.output,
        "error": None if status.error is None else repr(status.error),
        "executor_id": status.executor_id,
        "app_version": status.app_version,
        "created_at": status.created_at,
        "completed_at": status.completed_at,
        "recovery_attempts": getattr(status, "recovery_attempts", None),
    }


def step_json(step):
    return {
        "function_id": step["function_id"],
        "function_name": step["function_name"],
        "output": step["output"],
        "error": None if step["error"] is None else repr(step["error"]),
        "child_workflow_id": step["child_workflow_id"],
    }


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    url, workflow_id = sqlalchemy_url(sys.argv[1]), sys.argv[2]
    client = DBOSClient(system_database_url=url)
    try:
        listed = client.list_workflows(workflow_ids=[workflow_id])
        handle = client.retrieve_workflow(workflow_id)
        seen = {
            "listed": [status_json(s) for s in listed],
            "status": status_json(handle.get_status()),
            "result": handle.get_result(),
            "steps": [step_json(s) for s in client.list_workflow_steps(workflow_id)],
        }
    finally:
        client.destroy()
    print(json.dumps(seen))
