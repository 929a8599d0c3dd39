// The client against a real `conveyor api` with a worker (started by the Python suite's harness,
// tests/clients/test_node_client.py, which passes the API's address, keys and queue in the environment).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  AuthenticationError,
  ConnectionError,
  ConveyorClient,
  IdempotencyConflictError,
  InvalidStateError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitedError,
  ValidationError,
} from "../dist/index.js";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through the Python harness`);
  return value;
};
const baseUrl = env("CONVEYOR_TEST_API_URL");
const queue = env("CONVEYOR_TEST_QUEUE");
const client = new ConveyorClient({ baseUrl, apiKey: env("CONVEYOR_TEST_KEY_CLIENT") });

// The snapshot carries the progress made before the stream's cursor; the events carry every step
// after it (a step made while connecting may show in both): together they leave no gap up to `last`.
function assertNoGap(seen, last) {
  const before = seen[0].data.progress?.done ?? 0;
  const progress = seen.filter((e) => e.event === "progress").map((e) => e.data.progress.done);
  if (progress.length === 0) return assert.equal(before, last);
  assert.ok(progress[0] <= before + 1, `gap between snapshot ${before} and first event ${progress[0]}`);
  assert.deepEqual(progress, Array.from({ length: last - progress[0] + 1 }, (_, i) => progress[0] + i));
}
const admin = new ConveyorClient({ baseUrl, apiKey: env("CONVEYOR_TEST_KEY_ADMIN") });
const reader = new ConveyorClient({ baseUrl, apiKey: env("CONVEYOR_TEST_KEY_READ") });

test("enqueue then wait returns the finished job with its result", async () => {
  const made = await client.enqueue(queue, "echo", { text: "hi", n: 3 }, { attempts: 2, priority: 5 });
  assert.equal(made.created, true);
  assert.equal(made.queue, queue);
  assert.equal(made.state, "waiting");
  const job = await client.wait(queue, made.id, { timeoutS: 30 });
  assert.equal(job.state, "completed");
  assert.deepEqual(job.result, { text: "hihihi" });
  assert.equal(job.max_attempts, 2);
  assert.equal(job.priority, 5);
  const again = await client.getJob(queue, made.id);
  assert.equal(again.state, "completed");
});

test("idempotency key: a repeat returns the same job, another body is a conflict", async () => {
  const key = `order-${process.pid}-${Date.now()}`;
  const first = await client.enqueue(queue, "echo", { text: "a" }, { idempotencyKey: key });
  const repeat = await client.enqueue(queue, "echo", { text: "a" }, { idempotencyKey: key });
  assert.equal(repeat.id, first.id);
  assert.equal(repeat.created, false);
  await assert.rejects(client.enqueue(queue, "echo", { text: "b" }, { idempotencyKey: key }), (error) => {
    assert.ok(error instanceof IdempotencyConflictError);
    assert.equal(error.status, 409);
    assert.equal(error.code, "idempotency_conflict");
    return true;
  });
});

test("enqueueBulk stores every job, all or nothing", async () => {
  const made = await client.enqueueBulk(queue, [
    { name: "echo", data: { text: "x" } },
    { name: "echo", data: { text: "y" }, options: { delay: 3600 } },
  ]);
  assert.equal(made.length, 2);
  assert.deepEqual(made.map((j) => j.state), ["waiting", "delayed"]);
  await assert.rejects(
    client.enqueueBulk(queue, [{ name: "echo", data: { text: "z" } }, { name: "echo", data: { text: 5 } }]),
    ValidationError,
  );
  await admin.cancel(queue, made[1].id);
});

test("bad input maps to typed errors with the API's code and field errors", async () => {
  await assert.rejects(client.enqueue(queue, "echo", { text: 42 }), (error) => {
    assert.ok(error instanceof ValidationError);
    assert.equal(error.status, 422);
    assert.ok(error.details.some((d) => d.loc.includes("text")));
    return true;
  });
  await assert.rejects(client.enqueue(queue, "echo", { text: "a" }, { priority: 5000 }), ValidationError);
  await assert.rejects(client.enqueue(queue, "no-such-task", {}), NotFoundError);
  await assert.rejects(client.enqueue("no-such-queue", "echo", { text: "a" }), NotFoundError);
  await assert.rejects(client.getJob(queue, "no-such-job"), (error) => {
    assert.ok(error instanceof NotFoundError);
    assert.equal(error.code, "not_found");
    return true;
  });
});

test("enqueueFlow: children run first, the parent after them, and the job shows both sides", async () => {
  const root = await client.enqueueFlow({
    queue,
    name: "echo",
    data: { text: "parent" },
    children: [
      { queue, name: "echo", data: { text: "a" } },
      { queue, name: "echo", data: { text: "b" }, options: { priority: 3 } },
    ],
  });
  assert.equal(root.queue, queue);
  const done = await client.wait(queue, root.id, { timeoutS: 60 });
  assert.equal(done.state, "completed");
  assert.equal(done.parent, null);
  assert.equal(done.children.length, 2, JSON.stringify(done));
  for (const child of done.children) {
    assert.equal(child.state, "completed", JSON.stringify(done.children));
    const job = await client.getJob(child.queue, child.id);
    assert.deepEqual(job.parent, { queue, id: root.id });
    assert.ok(job.finished_ms <= done.started_ms, "a child ended before its parent started");
  }
  // A bad node: nothing is written, and the error names where it is in the tree.
  await assert.rejects(
    client.enqueueFlow({ queue, name: "echo", data: { text: "p" }, children: [{ queue, name: "no-such-task" }] }),
    (error) => {
      assert.ok(error instanceof ValidationError);
      assert.equal(error.details[0].path, "root.children[0]");
      return true;
    },
  );
});

test("authentication and scopes", async () => {
  const anonymous = new ConveyorClient({ baseUrl });
  await assert.rejects(anonymous.getJob(queue, "1"), AuthenticationError);
  const wrong = new ConveyorClient({ baseUrl, apiKey: "cvk_0000000000000000_" + "0".repeat(64) });
  await assert.rejects(wrong.getJob(queue, "1"), AuthenticationError);
  await assert.rejects(reader.enqueue(queue, "echo", { text: "a" }), PermissionDeniedError);
  await assert.rejects(client.retry(queue, "1"), PermissionDeniedError); // retry needs admin
});

test("events: live progress to the end, then resume from an event id without repeats", async () => {
  // Delayed by a second, so the stream is usually open before the first step.
  const made = await client.enqueue(queue, "stepper", { steps: 6, pause_s: 0.3 }, { delay: 1 });
  const seen = [];
  for await (const event of client.events(queue, made.id)) seen.push(event);
  const kinds = seen.map((e) => e.event);
  assert.equal(kinds[0], "state");
  assert.equal(kinds.at(-1), "completed");
  assertNoGap(seen, 6);

  // Resume after an event: exactly what followed it comes again, nothing before it.
  const cut = Math.max(0, seen.findIndex((e) => e.event === "progress"));
  const resumed = [];
  for await (const event of client.events(queue, made.id, { lastEventId: seen[cut].id })) resumed.push(event);
  assert.deepEqual(resumed.map((e) => e.id), seen.slice(cut + 1).map((e) => e.id));
});

test("events: a stream cut mid-way is resumed from the last event id", async () => {
  let calls = 0;
  const resumedWith = [];
  // Real fetch to the real API; the first event stream is cut after a few frames (a dropped connection).
  const cutting = async (url, init) => {
    const response = await fetch(url, init);
    if (!String(url).endsWith("/events")) return response;
    calls += 1;
    resumedWith.push(init.headers["Last-Event-ID"] ?? null);
    if (calls > 1) return response;
    const reader = response.body.getReader();
    let frames = 0;
    const body = new ReadableStream({
      async pull(controller) {
        const { value, done } = await reader.read();
        if (done) return controller.close();
        controller.enqueue(value);
        frames += (new TextDecoder().decode(value).match(/\n\n/g) ?? []).length;
        if (frames >= 3) {
          await reader.cancel();
          controller.error(new Error("connection reset"));
        }
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
  const flaky = new ConveyorClient({ baseUrl, apiKey: env("CONVEYOR_TEST_KEY_CLIENT"), fetch: cutting });
  const made = await client.enqueue(queue, "stepper", { steps: 6, pause_s: 0.3 }, { delay: 1 });
  const seen = [];
  for await (const event of flaky.events(queue, made.id)) seen.push(event);
  assert.equal(calls, 2);
  assert.equal(resumedWith[0], null);
  assert.ok(resumedWith[1]);
  assert.equal(new Set(seen.map((e) => e.id)).size, seen.length); // nothing twice
  assert.equal(seen.at(-1).event, "completed");
  assertNoGap(seen, 6);
});

test("events of a finished job: one state snapshot and the stream ends", async () => {
  const made = await client.enqueue(queue, "echo", { text: "done" });
  await client.wait(queue, made.id, { timeoutS: 30 });
  const seen = [];
  for await (const event of client.events(queue, made.id)) seen.push(event);
  assert.deepEqual(seen.map((e) => [e.event, e.data.state]), [["state", "completed"]]);
});

test("cancel a delayed job; retry a failed one", async () => {
  const later = await client.enqueue(queue, "echo", { text: "later" }, { delay: 3600 });
  assert.deepEqual(await admin.cancel(queue, later.id), { id: later.id, queue, state: "cancelled" });
  // Sent again (a reply lost on the way): the same answer, nothing changed.
  assert.deepEqual(await admin.cancel(queue, later.id), { id: later.id, queue, state: "cancelled" });

  const doomed = await client.enqueue(queue, "boom");
  const failed = await client.wait(queue, doomed.id, { timeoutS: 30 });
  assert.equal(failed.state, "failed");
  assert.equal(failed.error.type, "ValueError");
  const retried = await admin.retry(queue, doomed.id);
  assert.equal(retried.state, "waiting");
  assert.equal((await client.wait(queue, doomed.id, { timeoutS: 30 })).state, "failed");
  await assert.rejects(admin.cancel(queue, doomed.id), InvalidStateError); // it has ended: a real conflict
});

test("wait with a timeout returns the job as it is", async () => {
  const later = await client.enqueue(queue, "echo", { text: "later" }, { delay: 3600 });
  const job = await client.wait(queue, later.id, { timeoutS: 0.2 });
  assert.equal(job.state, "delayed");
  await admin.cancel(queue, later.id);
});

test("rate limits surface as RateLimitedError with Retry-After", async () => {
  const limited = new ConveyorClient({ baseUrl, apiKey: env("CONVEYOR_TEST_KEY_LIMITED") });
  let error;
  for (let i = 0; i < 10 && !error; i++) {
    try {
      await limited.getJob(queue, "1").catch((e) => {
        if (!(e instanceof NotFoundError)) throw e;
      });
    } catch (e) {
      error = e;
    }
  }
  assert.ok(error instanceof RateLimitedError, String(error));
  assert.equal(error.status, 429);
  assert.ok(error.retryAfterS !== null && error.retryAfterS >= 0);
});

test("no server: ConnectionError", async () => {
  const nowhere = new ConveyorClient({ baseUrl: env("CONVEYOR_TEST_DEAD_URL"), apiKey: "x", timeoutMs: 5000 });
  await assert.rejects(nowhere.getJob(queue, "1"), (error) => {
    assert.ok(error instanceof ConnectionError);
    assert.equal(error.status, 0);
    return true;
  });
});
