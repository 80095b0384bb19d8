"""Messages, events, streams and cancellation through DBOS 3.4, against Cairn workflows.

Usage: python comm.py <command> <system database URL> <arguments…>

  send <url> <workflow id> <topic> <message JSON> [idempotency key] [times] [format]
      DBOSClient.send the message `times` times (default 1), with the idempotency key
      (`-` for none), serialized as `format`: portable (default) or default (DBOS's own,
      py_pickle). Prints {"sent": times}.
  read <url> <workflow id>
      DBOSClient.get_event "status" and "count" (10 s timeout each) and the whole stream
      "s" via DBOSClient.read_stream (which must end). Prints
      {"status": …, "count": …, "missing": …, "stream": […]}.
  cancel <url> <workflow id>
      DBOSClient.cancel_workflow, then prints {"status": <status after the cancel>}.
  status <url> <workflow id>
      Prints {"status": <the workflow's status as DBOSClient reads it>}.
  app <url> <format>
      Launch a DBOS application ("interop") on the database and run to completion one
      workflow that sets the event "k" to {"x": 1}, "k" again to {"x": 2, "y": [1, "two"]},
      "n" to 7, writes the stream "s" with 1, "two" and {"three": 3}, then closes it.
      `format` is portable (the workflow's serialization_type is PORTABLE) or default
      (DBOS's default serializer, py_pickle). Prints {"workflow_id": …, "serialization": …}.

The last line of stdout is the JSON result.
"""

import json
import sys

from migrate import sqlalchemy_url


def fmt(name):
    from dbos._serialization import WorkflowSerializationFormat

    return {
        "portable": WorkflowSerializationFormat.PORTABLE,
        "default": WorkflowSerializationFormat.DEFAULT,
    }[name]


def with_client(url, body):
    from dbos import DBOSClient

    client = DBOSClient(system_database_url=url)
    try:
        return body(client)
    finally:
        client.destroy()


def send(url, workflow_id, topic, message, key="-", times="1", format="portable"):
    message = json.loads(message)
    key = None if key == "-" else key

    def body(client):
        for _ in range(int(times)):
            client.send(
                workflow_id,
                message,
                topic,
                idempotency_key=key,
                serialization_type=fmt(format),
            )
        return {"sent": int(times)}

    return with_client(url, body)


def read(url, workflow_id):
    def body(client):
        return {
            "status": client.get_event(workflow_id, "status", 10),
            "count": client.get_event(workflow_id, "count", 10),
            "missing": client.get_event(workflow_id, "missing", 0.5),
            "stream": list(client.read_stream(workflow_id, "s", timeout_seconds=30)),
        }

    return with_client(url, body)


def cancel(url, workflow_id):
    def body(client):
        client.cancel_workflow(workflow_id)
        return {"status": client.retrieve_workflow(workflow_id).get_status().status}

    return with_client(url, body)


def app(url, format):
    from dbos import DBOS

    DBOS(config={"name": "interop", "system_database_url": url})

    @DBOS.workflow(name="dbos_publisher", serialization_type=fmt(format))
    def publisher() -> str:
        DBOS.set_event("k", {"x": 1})
        DBOS.set_event("k", {"x": 2, "y": [1, "two"]})
        DBOS.set_event("n", 7)
        for value in [1, "two", {"three": 3}]:
            DBOS.write_stream("s", value)
        DBOS.close_stream("s")
        return "published"

    DBOS.launch()
    try:
        handle = DBOS.start_workflow(publisher)
        result = handle.get_result()
        assert result == "published", result
        status = handle.get_status()
        return {
            "workflow_id": handle.get_workflow_id(),
            "status": status.status,
            "serialization": getattr(status, "serialization", None),
        }
    finally:
        DBOS.destroy()


def status(url, workflow_id):
    def body(client):
        return {"status": client.retrieve_workflow(workflow_id).get_status().status}

    return with_client(url, body)


COMMANDS = {"send": send, "read": read, "cancel": cancel, "status": status, "app": app}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    command, url, rest = sys.argv[1], sqlalchemy_url(sys.argv[2]), sys.argv[3:]
    print(json.dumps(COMMANDS[command](url, *rest)))
