// DBOS's TypeScript client (`DBOSClient` of @dbos-inc/dbos-sdk, in its default configuration:
// only the system database URL, values in its default `js_superjson` format) driving a Cairn
// system database, for crates/cairn/tests/interop_ts.rs.
//
//   node client.js <system database URL> <command> [args…]
//
// Commands (each prints one JSON line, its answer, last on stdout):
//   list <workflow name>                       the workflows of that name, oldest first
//   result <workflow id>                       the workflow's result (awaited)
//   steps <workflow id>                        its recorded steps
//   enqueue <queue> <workflow name> <JSON array of arguments> <workflow id>
//   send <workflow id> <topic> <kind>          kind: "number" (7) or "rich" (superjson types)
//   event <workflow id> <key> <timeout s>      the event's value (null when not set in time)
'use strict';

const { DBOSClient } = require('@dbos-inc/dbos-sdk');

/** Messages `send` can send, by kind: the rich one carries every superjson annotation Cairn maps. */
const MESSAGES = {
  number: () => 7,
  rich: () => ({
    when: new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)),
    big: 12345678901234567890n,
    tags: new Set(['a', 'b']),
    scores: new Map([
      ['x', 1],
      ['y', 2],
    ]),
    pairs: new Map([
      [1, 'one'],
      [2, 'two'],
    ]),
    missing: undefined,
    list: [undefined, 3],
  }),
};

/** Plain JSON of a client answer (dates as ISO strings, errors as their name and message). */
function plain(value) {
  return JSON.parse(
    JSON.stringify(value, (_key, v) => {
      if (typeof v === 'bigint') return v.toString();
      if (v instanceof Error) return { name: v.name, message: v.message };
      return v;
    }) ?? 'null',
  );
}

async function run(client, command, args) {
  switch (command) {
    case 'list': {
      const workflows = await client.listWorkflows({ workflowName: args[0], loadInput: true, loadOutput: true });
      return workflows.map((w) => ({
        workflowID: w.workflowID,
        workflowName: w.workflowName,
        status: w.status,
        input: w.input,
        output: w.output,
        error: w.error ?? null,
        queueName: w.queueName ?? null,
      }));
    }
    case 'result':
      return { result: await client.retrieveWorkflow(args[0]).getResult() };
    case 'steps':
      return await client.listWorkflowSteps(args[0]);
    case 'enqueue': {
      const [queueName, workflowName, argsJson, workflowID] = args;
      const handle = await client.enqueue({ queueName, workflowName, workflowID }, ...JSON.parse(argsJson));
      return { workflowID: handle.workflowID };
    }
    case 'send': {
      const [destination, topic, kind] = args;
      const message = MESSAGES[kind];
      if (!message) throw new Error(`unknown message kind ${kind}`);
      await client.send(destination, message(), topic);
      return { sent: kind };
    }
    case 'event': {
      const [workflowID, key, timeoutSeconds] = args;
      return { value: await client.getEvent(workflowID, key, { timeoutSeconds: Number(timeoutSeconds) }) };
    }
    default:
      throw new Error(`unknown command ${command}`);
  }
}

async function main() {
  const [url, command, ...args] = process.argv.slice(2);
  if (!url || !command) {
    throw new Error('usage: node client.js <system database URL> <command> [args…]');
  }
  const client = await DBOSClient.create({ systemDatabaseUrl: url });
  try {
    const answer = await run(client, command, args);
    process.stdout.write(`${JSON.stringify(plain(answer))}\n`);
  } finally {
    await client.destroy();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
