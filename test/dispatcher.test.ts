import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type BackendBatch,
  BackendError,
  type BatchOutcome,
  type BatchStream,
  type FailureKind,
  type LoadedModel,
} from "../src/backend/types.js";
import {
  type Clock,
  Dispatcher,
  type DispatchHooks,
  ServerRefusedError,
  type WorkItem,
} from "../src/dispatch/dispatcher.js";
import type { ServerSession } from "../src/dispatch/servers.js";
import { MEMORY_DESCRIPTION, MemoryBackend } from "./memory-backend.js";
import { MODEL_INFO } from "./phase-helpers.js";

// The dispatcher on in-memory backends with fake streams and a fake clock:
// no servers, no Python, no gRPC, no real time.

const MODEL = MODEL_INFO;

/** Where the streams a backend opens go: the list of the harness that uses it. */
const home = new WeakMap<MemoryBackend, FakeStream[]>();

function session(target: string, model: LoadedModel = MODEL): ServerSession {
  const backend: MemoryBackend = new MemoryBackend(target, (onBroken) => {
    const stream = new FakeStream(target, onBroken);
    const streams = home.get(backend);
    if (!streams) throw new Error(`${target}: a session no harness knows`);
    streams.push(stream);
    return stream;
  });
  return { target, backend, info: MEMORY_DESCRIPTION, models: new Map([["m", model]]) };
}

interface Sent {
  batch: BackendBatch;
  resolve(result: BatchOutcome): void;
}

/** A stream per server: the test answers, fails or breaks what was sent. */
class FakeStream implements BatchStream {
  readonly sent: Sent[] = [];
  closed = false;
  private readonly rejects: ((err: BackendError) => void)[] = [];
  constructor(
    readonly target: string,
    private readonly onBroken: (err: BackendError) => void,
  ) {}
  send(batch: BackendBatch): Promise<BatchOutcome> {
    return new Promise((resolve, reject) => {
      this.sent.push({ batch, resolve });
      this.rejects.push(reject);
    });
  }
  close(): void {
    this.closed = true;
  }
  /** The stream breaks: every batch on it fails, the owner is told once. */
  break(code = "UNAVAILABLE", kind: FailureKind = "server"): void {
    const err = new BackendError(this.target, kind, code, "broken");
    for (const r of this.rejects) r(err);
    this.onBroken(err);
  }
}

function ok(batch: BackendBatch): BatchOutcome {
  const rows = batch.texts.length;
  return {
    ok: true,
    vectors: {
      rows,
      dim: MODEL.dim,
      data: Buffer.alloc(rows * MODEL.dim * 4),
      tokenCounts: [],
      truncated: [],
    },
  };
}

function failed(target: string, kind: FailureKind, code = "INVALID_ARGUMENT"): BatchOutcome {
  return { ok: false, error: new BackendError(target, kind, code, "bad batch") };
}

/** Timers that fire only when the test advances time. */
class FakeClock implements Clock {
  now = 0;
  private timers: { at: number; fn: () => void; live: boolean }[] = [];
  after(ms: number, fn: () => void): () => void {
    const t = { at: this.now + ms, fn, live: true };
    this.timers.push(t);
    return () => {
      t.live = false;
    };
  }
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.after(ms, resolve));
  }
  async advance(ms: number): Promise<void> {
    const until = this.now + ms;
    for (;;) {
      const next = this.timers
        .filter((t) => t.live && t.at <= until)
        .sort((a, b) => a.at - b.at)[0];
      if (!next) break;
      next.live = false;
      this.now = next.at;
      next.fn();
      await settle();
    }
    this.now = until;
    this.timers = this.timers.filter((t) => t.live);
  }
}

/** Lets promise callbacks run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
}

function items(n: number, priorAttempts = 0): WorkItem[] {
  return Array.from({ length: n }, (_, i) => ({
    alias: "m",
    batchNo: i,
    rows: Uint32Array.of(i * 2, i * 2 + 1),
    priorAttempts,
  }));
}

interface Harness {
  dispatcher: Dispatcher;
  streams: FakeStream[];
  clock: FakeClock;
  accepted: { batchNo: number; server: string; attempts: number }[];
  attempts: { batchNo: number; attempts: number }[];
  changes: string[];
  retried: { batchNo: number; server: string; problem: string }[];
}

function harness(
  ready: ServerSession[],
  options: { maxAttempts?: number; serverTimeoutMs?: number; maxWorkers?: number } = {},
  reopen: DispatchHooks["reopen"] = () => Promise.reject(new Error("still down")),
  waiting: ServerSession[] = [],
  check: DispatchHooks["check"] = () => null,
): Harness {
  const streams: FakeStream[] = [];
  const adopt = (s: ServerSession) => home.set(s.backend as MemoryBackend, streams);
  for (const s of [...ready, ...waiting]) adopt(s);
  const clock = new FakeClock();
  const h: Omit<Harness, "dispatcher"> = {
    streams,
    clock,
    accepted: [],
    attempts: [],
    changes: [],
    retried: [],
  };
  const dispatcher = new Dispatcher(
    ready,
    {
      maxWorkers: options.maxWorkers ?? 2,
      batchTimeoutMs: 1000,
      serverTimeoutMs: options.serverTimeoutMs ?? 10_000,
      maxAttempts: options.maxAttempts ?? 3,
    },
    {
      payload: (item) => ({ texts: Array.from(item.rows, (r) => `text ${r}`), tokens: undefined }),
      accept: (item, _e, server, attempts) =>
        h.accepted.push({ batchNo: item.batchNo, server, attempts }),
      describe: (item) => `batch ${item.batchNo}`,
      attemptFailed: (item, attempts) => h.attempts.push({ batchNo: item.batchNo, attempts }),
      serverChanged: (target, state) => h.changes.push(`${target} ${state}`),
      reopen: async (s) => {
        const fresh = await reopen(s);
        adopt(fresh);
        return fresh;
      },
      check,
      retried: (item, server, problem) =>
        h.retried.push({ batchNo: item.batchNo, server, problem }),
    },
    MODEL_MAP,
    waiting,
    { clock },
  );
  return { ...h, dispatcher };
}
const MODEL_MAP = new Map([["m", MODEL]]);

/** Answers every batch waiting on a stream. */
function answerAll(stream: FakeStream): void {
  for (const s of stream.sent.splice(0)) s.resolve(ok(s.batch));
}

test("a broken stream's batches go back to the queue and another server embeds them", async () => {
  const h = harness([session("a:1"), session("b:1")]);
  const done = h.dispatcher.run(items(4), new AbortController().signal);
  await settle();
  const [a, b] = h.streams;
  assert.ok(a && b);
  assert.equal(a.sent.length, 2);
  a.break();
  await settle();
  // b takes its own two, then a's two once it has room.
  answerAll(b);
  await settle();
  answerAll(b);
  await done;
  assert.deepEqual(h.accepted.map((x) => x.batchNo).sort(), [0, 1, 2, 3]);
  assert.ok(h.accepted.every((x) => x.server === "b:1"));
  assert.deepEqual(h.changes, ["a:1 down"]);
  // The batches on the broken stream count a failed attempt each.
  assert.deepEqual(
    h.attempts.map((x) => x.attempts),
    [1, 1],
  );
  assert.equal(h.accepted.find((x) => x.batchNo === 0)?.attempts, 2);
});

test("a batch that fails --max_attempts times stops the run, counting earlier runs' attempts", async () => {
  const h = harness([session("a:1")], { maxAttempts: 3 });
  const done = h.dispatcher.run(items(1, 1), new AbortController().signal);
  done.catch(() => {}); // rejects before the test awaits it
  await settle();
  const [a] = h.streams;
  assert.ok(a);
  for (let i = 0; i < 2; i++) {
    const s = a.sent.shift();
    assert.ok(s, `attempt ${i + 2} sent`);
    s.resolve(failed("a:1", "batch"));
    await settle();
  }
  await assert.rejects(done, /batch 0 failed 3 times, last: INVALID_ARGUMENT: bad batch/);
  assert.deepEqual(
    h.attempts.map((x) => x.attempts),
    [2, 3],
  );
  assert.equal(h.accepted.length, 0);
});

test("with every server down for --server_timeout the run stops, naming each server", async () => {
  const h = harness([session("a:1")], { serverTimeoutMs: 5000 });
  const done = h.dispatcher.run(items(2), new AbortController().signal);
  await settle();
  h.streams[0]?.break();
  await settle();
  await h.clock.advance(4999);
  let stopped = false;
  done.catch(() => {
    stopped = true;
  });
  await settle();
  assert.equal(stopped, false, "not before the timeout");
  await h.clock.advance(1);
  await assert.rejects(
    done,
    /no inference server up for 5 s \(--server_timeout\): a:1: still down/,
  );
});

test("a failed server is retried with backoff and rejoins; one with other weights is retired", async () => {
  let tries = 0;
  const a = session("a:1");
  const h = harness([a, session("b:1", MODEL)], {}, async (s) => {
    tries++;
    if (tries < 3) throw new Error("still down");
    if (s.target === "a:1") return session("a:1");
    return s;
  });
  const done = h.dispatcher.run(items(6), new AbortController().signal);
  await settle();
  h.streams[0]?.break();
  await settle();
  await h.clock.advance(250);
  assert.equal(tries, 1, "first retry after 250 ms");
  await h.clock.advance(499);
  assert.equal(tries, 1, "then the delay doubles");
  await h.clock.advance(1);
  assert.equal(tries, 2);
  await h.clock.advance(1000);
  assert.equal(tries, 3);
  assert.deepEqual(h.changes, ["a:1 down", "a:1 up"]);
  const fresh = h.streams[2];
  assert.ok(fresh, "a new stream to the server that came back");
  assert.equal(fresh.sent.length, 2, "it takes batches again");
  answerAll(fresh);
  await settle();
  for (let i = 0; i < 3; i++) {
    if (h.streams[1]) answerAll(h.streams[1]);
    answerAll(fresh);
    await settle();
  }
  await done;
  assert.equal(h.accepted.length, 6);
  assert.ok(h.accepted.some((x) => x.server === "a:1"));

  const other = harness([session("c:1"), session("d:1")], {}, async () =>
    session("c:1", { ...MODEL, revision: "r2" }),
  );
  const run2 = other.dispatcher.run(items(2), new AbortController().signal);
  await settle();
  other.streams[0]?.break();
  await settle();
  await other.clock.advance(250);
  assert.deepEqual(other.changes, ["c:1 down", "c:1 retired"]);
  answerAll(other.streams[1] as FakeStream);
  await settle();
  answerAll(other.streams[1] as FakeStream);
  await run2;
});

test("a result that arrives after its stream broke is ignored: the batch is embedded once", async () => {
  const h = harness([session("a:1"), session("b:1")], { maxWorkers: 1 });
  const done = h.dispatcher.run(items(2), new AbortController().signal);
  await settle();
  const [a, b] = h.streams;
  assert.ok(a && b);
  const late = a.sent[0];
  assert.ok(late);
  // A missed deadline breaks a's stream; batch 0 goes to b after b's own.
  a.break("DEADLINE_EXCEEDED");
  await settle();
  answerAll(b);
  await settle();
  // Now a's answer to batch 0 arrives, too late.
  late.resolve(ok(late.batch));
  await settle();
  answerAll(b);
  await done;
  assert.deepEqual(h.accepted.map((x) => `${x.batchNo}@${x.server}`).sort(), ["0@b:1", "1@b:1"]);
});

/** An answer whose vectors the fake check below rejects (its first byte marks it). */
function nan(batch: BackendBatch): BatchOutcome {
  const result = ok(batch);
  if (result.ok) result.vectors.data[0] = 0xff;
  return result;
}
const markedNan: DispatchHooks["check"] = (_item, e) =>
  e.data[0] === 0xff ? "row 0: NaN at dimension 0" : null;

test("a batch whose vectors fail the check is sent to another server, never written from the first", async () => {
  const h = harness([session("a:1"), session("b:1")], { maxWorkers: 1 }, undefined, [], markedNan);
  const done = h.dispatcher.run(items(2), new AbortController().signal);
  await settle();
  const [a, b] = h.streams;
  assert.ok(a && b);
  const first = a.sent.shift();
  assert.ok(first);
  first.resolve(nan(first.batch));
  await settle();
  assert.deepEqual(h.retried, [
    { batchNo: 0, server: "a:1", problem: "row 0: NaN at dimension 0" },
  ]);
  // a is free but must not take batch 0 again: b finishes its own, then takes it.
  assert.equal(a.sent.length, 0, "the failed batch is not given back to the same server");
  answerAll(b);
  await settle();
  answerAll(b);
  await done;
  assert.deepEqual(h.accepted.map((x) => `${x.batchNo}@${x.server}`).sort(), ["0@b:1", "1@b:1"]);
});

test("with one server a batch whose vectors fail the check is tried once more, then the run stops naming it", async () => {
  const h = harness([session("a:1")], {}, undefined, [], markedNan);
  const done = h.dispatcher.run(items(2), new AbortController().signal);
  done.catch(() => {});
  await settle();
  const [a] = h.streams;
  assert.ok(a);
  const first = a.sent.find((s) => s.batch.texts[0] === "text 0");
  assert.ok(first);
  first.resolve(nan(first.batch));
  await settle();
  const again = a.sent.filter((s) => s.batch.texts[0] === "text 0");
  assert.equal(again.length, 2, "sent once more to the only server");
  again[1]?.resolve(nan(again[1].batch));
  await settle();
  await assert.rejects(
    done,
    /^ExitError: batch 0: the vectors failed the checks twice from server a:1 \(row 0: NaN at dimension 0; then row 0: NaN at dimension 0\); nothing of the batch was written/,
  );
  assert.equal(h.retried.length, 1);
  assert.ok(!h.accepted.some((x) => x.batchNo === 0), "the failing batch is never accepted");
});

test("a batch failing the check on two servers stops the run naming both", async () => {
  const h = harness([session("a:1"), session("b:1")], { maxWorkers: 1 }, undefined, [], markedNan);
  const done = h.dispatcher.run(items(1), new AbortController().signal);
  done.catch(() => {});
  await settle();
  const [a, b] = h.streams;
  assert.ok(a && b);
  const first = a.sent.shift() ?? b.sent.shift();
  assert.ok(first);
  first.resolve(nan(first.batch));
  await settle();
  const second = a.sent.shift() ?? b.sent.shift();
  assert.ok(second);
  second.resolve(nan(second.batch));
  await assert.rejects(done, /from servers a:1 and b:1/);
  assert.equal(h.accepted.length, 0);
});

test("a server refused on rejoining (its probes differ) is kept out; with none left the run stops with its line", async () => {
  const refusal = 'server a:1 is kept out for model "m": worst cosine 0.5';
  const reopened: string[] = [];
  const h = harness([session("a:1"), session("b:1")], { maxWorkers: 1 }, async (s) => {
    reopened.push(s.target);
    throw new ServerRefusedError(refusal);
  });
  const done = h.dispatcher.run(items(4), new AbortController().signal);
  done.catch(() => {});
  await settle();
  const [a, b] = h.streams;
  assert.ok(a && b);
  a.break();
  await h.clock.advance(1000);
  assert.deepEqual(h.changes, ["a:1 down", "a:1 retired"]);
  assert.deepEqual(reopened, ["a:1"], "a refused server is not retried");
  // b goes on with everything, a gets nothing more.
  for (let i = 0; i < 4; i++) {
    answerAll(b);
    await settle();
  }
  await done;
  assert.equal(h.accepted.length, 4);
  assert.ok(h.accepted.every((x) => x.server === "b:1"));
  await h.clock.advance(60_000);
  assert.deepEqual(reopened, ["a:1"]);

  // The only server refused: the run stops at once with the refusal.
  const alone = harness([session("c:1")], {}, async () => {
    throw new ServerRefusedError(refusal);
  });
  const stopped = alone.dispatcher.run(items(2), new AbortController().signal);
  stopped.catch(() => {});
  await settle();
  alone.streams[0]?.break();
  await alone.clock.advance(1000);
  await assert.rejects(stopped, (err: Error) => {
    assert.equal(err.message, `no server is left to embed with: ${refusal}`);
    return true;
  });
});

test("a batch the server says is not its fault goes elsewhere at no cost; a fatal error stops the run", async () => {
  const h = harness([session("a:1"), session("b:1")], { maxWorkers: 1 });
  const done = h.dispatcher.run(items(2), new AbortController().signal);
  await settle();
  const [a, b] = h.streams;
  assert.ok(a && b);
  const onA = a.sent.shift();
  assert.ok(onA);
  onA.resolve(failed("a:1", "server", "HTTP 503"));
  await settle();
  answerAll(b);
  await settle();
  answerAll(b);
  await done;
  assert.deepEqual(h.attempts, [], "a server's fault costs no attempt");
  assert.deepEqual(h.changes, ["a:1 down"]);
  assert.ok(h.accepted.every((x) => x.server === "b:1" && x.attempts === 1));

  const f = harness([session("c:1"), session("d:1")], { maxWorkers: 1 });
  const stopped = f.dispatcher.run(items(2), new AbortController().signal);
  stopped.catch(() => {});
  await settle();
  f.streams[0]?.sent[0]?.resolve(failed("c:1", "fatal", "UNAUTHENTICATED"));
  await assert.rejects(
    stopped,
    /^ServerError: server c:1: UNAUTHENTICATED: bad batch; the checkpoint is intact/,
  );
  assert.deepEqual(f.attempts, []);
});

test("a server added during the run is reopened and takes work; a removed one is drained at no cost", async () => {
  const reopened: string[] = [];
  const h = harness([session("a:1")], { maxWorkers: 2 }, async (s) => {
    reopened.push(s.target);
    return session(s.target);
  });
  const done = h.dispatcher.run(items(4), new AbortController().signal);
  await settle();
  h.dispatcher.addServer(session("b:1"));
  await settle();
  assert.deepEqual(reopened, ["b:1"], "checked (health, models, probes) before any work");
  const [a, b] = h.streams;
  assert.ok(a && b);
  assert.equal(a.sent.length, 2);
  assert.equal(b.sent.length, 2);
  h.dispatcher.removeServer("a:1");
  await settle();
  assert.equal(a.closed, true);
  // a's answers after it was drained are ignored; its batches went to b.
  answerAll(a);
  answerAll(b);
  await settle();
  answerAll(b);
  await done;
  assert.deepEqual(h.attempts, [], "draining costs no attempt");
  assert.deepEqual(h.accepted.map((x) => x.batchNo).sort(), [0, 1, 2, 3]);
  assert.ok(h.accepted.every((x) => x.server === "b:1" && x.attempts === 1));
  assert.deepEqual(h.changes, ["b:1 up", "a:1 removed"]);
});
