"""A long-running DBOS 3.4 application process, driven by crates/cairn/tests/interop_client.rs.

Usage: python client_worker.py <command> <system database URL> <side log> <arguments…>

  serve <url> <side log>
      The application "interop-py" (DBOS's default configuration: its default serializer,
      its computed application version, executor "local"), serving the queue "py_queue"
      (polled every 0.1 s) with these workflows:
        py_chat(name: str, count: int, tags: list) -> dict
            step py_greet, set_event "greeting" to {"text", "count"}, recv "reply" (600 s),
            return {"greeting", "count", "tags", "reply"}.
        py_fail(reason: str)
            raises ValueError(reason).
        py_steps(tag: str) -> str
            steps py_one, py_two, py_three, each appending "exec <step> <workflow id>" to the
            side log; returns "<tag>:1:2:3".
      Nothing needs configuring for portable JSON: DBOS decodes an enqueued workflow's
      arguments in the format its row names, and writes its events and output in that
      format too.
  shared <url> <side log> <start|recover> <count>
      The application "interop-shared-py" at application version "shared-v1", executor
      "local" (the same version and executor id as the Cairn process it shares the database
      with: only the application name tells their workflows apart). One workflow,
      "shared_job(tag: str) -> str" (portable JSON): step "mark" (appends
      "mark py <workflow id>" to the side log), recv "go" (600 s), returns "py:<tag>:<go>".
      `start` starts `count` of them with ids "py-<i>"; `recover` starts none (launch
      recovers this application's pending workflows).

Each command prints one JSON line {"ready": true, …} once the application is launched (and
its workflows started), then runs until stdin closes (or the process is killed), and exits 0.
"""

import json
import sys

from migrate import sqlalchemy_url


def side_log(path, line):
    # One write per line, so lines of concurrent threads and processes never interleave.
    with open(path, "a") as f:
        f.write(line + "\n")


def ready(**extra):
    print(json.dumps({"ready": True, **extra}), flush=True)


def wait_for_stdin_close():
    sys.stdin.read()


def serve(url, log):
    from dbos import DBOS, SetWorkflowID  # noqa: F401

    DBOS(config={"name": "interop-py", "system_database_url": url})

    @DBOS.step(name="py_greet")
    def py_greet(name: str) -> str:
        return f"Hello, {name}!"

    @DBOS.workflow(name="py_chat")
    def py_chat(name: str, count: int, tags: list) -> dict:
        assert isinstance(count, int), f"count is {type(count)}"
        greeting = py_greet(name)
        DBOS.set_event("greeting", {"text": greeting, "count": count})
        reply = DBOS.recv("reply", timeout_seconds=600)
        return {"greeting": greeting, "count": count, "tags": tags, "reply": reply}

    @DBOS.workflow(name="py_fail")
    def py_fail(reason: str) -> str:
        raise ValueError(reason)

    def logged(step):
        side_log(log, f"exec {step} {DBOS.workflow_id}")
        return step

    @DBOS.step(name="py_one")
    def py_one() -> str:
        return logged("py_one")

    @DBOS.step(name="py_two")
    def py_two() -> str:
        return logged("py_two")

    @DBOS.step(name="py_three")
    def py_three() -> str:
        return logged("py_three")

    @DBOS.workflow(name="py_steps")
    def py_steps(tag: str) -> str:
        py_one()
        py_two()
        py_three()
        return f"{tag}:1:2:3"

    DBOS.launch()
    try:
        from dbos._dbos import GlobalParams

        DBOS.register_queue("py_queue", polling_interval_sec=0.1)

        ready(app_version=GlobalParams.app_version, executor_id=GlobalParams.executor_id)
        wait_for_stdin_close()
    finally:
        DBOS.destroy()


def shared(url, log, mode, count):
    from dbos import DBOS, SetWorkflowID
    from dbos._serialization import WorkflowSerializationFormat

    DBOS(
        config={
            "name": "interop-shared-py",
            "system_database_url": url,
            "application_version": "shared-v1",
            "executor_id": "local",
        }
    )

    @DBOS.step(name="mark")
    def mark(tag: str) -> str:
        side_log(log, f"mark py {DBOS.workflow_id}")
        return tag

    @DBOS.workflow(
        name="shared_job", serialization_type=WorkflowSerializationFormat.PORTABLE
    )
    def shared_job(tag: str) -> str:
        mark(tag)
        go = DBOS.recv("go", timeout_seconds=600)
        return f"py:{tag}:{go}"

    DBOS.launch()
    try:
        ids = []
        if mode == "start":
            for i in range(int(count)):
                workflow_id = f"py-{i}"
                with SetWorkflowID(workflow_id):
                    DBOS.start_workflow(shared_job, workflow_id)
                ids.append(workflow_id)
        elif mode != "recover":
            sys.exit(f"unknown mode {mode}")
        ready(started=ids)
        wait_for_stdin_close()
    finally:
        DBOS.destroy()


COMMANDS = {"serve": serve, "shared": shared}

if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    command, url, rest = sys.argv[1], sqlalchemy_url(sys.argv[2]), sys.argv[3:]
    COMMANDS[command](url, *rest)
