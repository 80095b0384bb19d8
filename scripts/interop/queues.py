"""Queues through DBOS 3.4's client, against Cairn workflows.

Usage: python queues.py <command> <system database URL> <arguments…>

  enqueue <url> <spec JSON>
      DBOSClient.enqueue each item of the spec (a JSON list), in order. An item is
      {"workflow_name": …, "queue_name": …, "args": [positional arguments], and optionally
      "workflow_id", "priority", "deduplication_id", "delay_seconds"}; arguments are
      serialized as portable JSON, the format Cairn reads. An enqueue DBOS refuses as a
      duplicate (DBOSQueueDeduplicatedError) is answered with null. Prints
      {"ids": [workflow id or null, …]}.
  results <url> <workflow id>…
      DBOSClient.retrieve_workflow(id).get_result() for each id, in order (each waits for the
      workflow to finish). Prints {"results": […], "statuses": […]}.

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


def enqueue(url, spec):
    from dbos import EnqueueOptions
    from dbos._error import DBOSQueueDeduplicatedError
    from dbos._serialization import WorkflowSerializationFormat

    items = json.loads(spec)

    def body(client):
        ids = []
        for item in items:
            options = EnqueueOptions(
                workflow_name=item["workflow_name"],
                queue_name=item["queue_name"],
                serialization_type=WorkflowSerializationFormat.PORTABLE,
            )
            for key in ("workflow_id", "priority", "deduplication_id", "delay_seconds"):
                if key in item:
                    options[key] = item[key]
            try:
                handle = client.enqueue(options, *item["args"])
                ids.append(handle.get_workflow_id())
            except DBOSQueueDeduplicatedError:
                ids.append(None)
        return {"ids": ids}

    return with_client(url, body)


def results(url, *workflow_ids):
    def body(client):
        handles = [client.retrieve_workflow(i) for i in workflow_ids]
        return {
            "results": [h.get_result(polling_interval_sec=0.1) for h in handles],
            "statuses": [h.get_status().status for h in handles],
        }

    return with_client(url, body)


COMMANDS = {"enqueue": enqueue, "results": results}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    command, url, rest = sys.argv[1], sqlalchemy_url(sys.argv[2]), sys.argv[3:]
    print(json.dumps(COMMANDS[command](url, *rest)))
