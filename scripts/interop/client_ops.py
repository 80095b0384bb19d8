"""Management calls through DBOS 3.4's DBOSClient, against Cairn workflows.

Usage: python client_ops.py <command> <system database URL> <arguments…>

  list <url> <filters JSON>
      DBOSClient.list_workflows(**filters) (any of its keyword arguments: workflow_ids,
      workflow_id_prefix, status, name, app_version, executor_id, application_name,
      forked_from, limit, offset, sort_desc, load_input, load_output, …). Prints
      {"workflows": [{workflow_id, status, name, input, output, error, executor_id,
      app_version, application_name, queue_name, forked_from, created_at}, …]}.
  fork <url> <workflow id> <start step> <forked id> <application version or ->
      DBOSClient.fork_workflow under the given id (SetWorkflowID, as `dbos workflow fork
      -f` does). Prints {"workflow_id": …, "status": …, "forked_from": …,
      "app_version": …}.

The last line of stdout is the JSON result.
"""

import json
import sys

from migrate import sqlalchemy_url


def with_client(url, body):
    from dbos import DBOSClient

    client = DBOSClient(system_database_url=url)
    try:
        return body(client)
    finally:
        client.destroy()


def status_json(s):
    return {
        "workflow_id": s.workflow_id,
        "status": s.status,
        "name": s.name,
        "input": None
        if s.input is None
        else {"args": list(s.input["args"]), "kwargs": s.input["kwargs"]},
        "output": s.output,
        "error": None if s.error is None else repr(s.error),
        "executor_id": s.executor_id,
        "app_version": s.app_version,
        "application_name": s.application_name,
        "queue_name": s.queue_name,
        "forked_from": getattr(s, "forked_from", None),
        "created_at": s.created_at,
    }


def list_workflows(url, filters):
    filters = json.loads(filters)

    def body(client):
        return {"workflows": [status_json(s) for s in client.list_workflows(**filters)]}

    return with_client(url, body)


def fork(url, workflow_id, start_step, forked_id, app_version):
    from dbos import SetWorkflowID

    version = None if app_version == "-" else app_version

    def body(client):
        with SetWorkflowID(forked_id):
            handle = client.fork_workflow(
                workflow_id, int(start_step), application_version=version
            )
        status = handle.get_status()
        return {
            "workflow_id": handle.get_workflow_id(),
            "status": status.status,
            "forked_from": getattr(status, "forked_from", None),
            "app_version": status.app_version,
        }

    return with_client(url, body)


COMMANDS = {"list": list_workflows, "fork": fork}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    command, url, rest = sys.argv[1], sqlalchemy_url(sys.argv[2]), sys.argv[3:]
    print(json.dumps(COMMANDS[command](url, *rest)))
