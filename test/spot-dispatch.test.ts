import assert from "node:assert/strict";
import { test } from "node:test";
import type {
  BackendBatch,
  BatchOutcome,
  BatchStream,
  LoadedModel,
  Vectors,
} from "../src/backend/types.js";
import { pickSpots, type SpotRow, withSpots } from "../src/checks/spot.js";
import {
  Dispatcher,
  ServerRefusedError,
  type SpotHooks,
  type WorkItem,
} from "../src/dispatch/dispatcher.js";
import type { ServerSession } from "../src/dispatch/servers.js";
import { ServerError } from "../src/errors.js";
import { MEMORY_DESCRIPTION, MemoryBackend } from "./memory-backend.js";
import { MODEL_INFO } from "./phase-helpers.js";

// Spot checks in the dispatcher (issue 16), on in-memory servers that answer
// at once: the vector of a text is a function of the text, and a faulty server
// turns the vectors of some batches (not of the probe) around.

const DIM = MODEL_INFO.dim;
const MODEL: LoadedModel = MODEL_INFO;

/** The right vector of a text: unit length, different for different texts. */
function vectorOf(text: string): Float32Array {
  let h = 2166136261;
  for (const c of text) h = Math.imul(h ^ (c.codePointAt(0) ?? 0), 16777619) >>> 0;
  const v = Float32Array.from({ length: DIM }, (_, d) => Math.sin(h / 1e5 + d * 1.7) + 0.1 * d);
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

/** Whether a server gets the `n`-th batch it is sent (from 0) wrong. */
type Fault = (n: number) => boolean;

/** A stream that answers every batch right away, wrong where the fault says so. */
class AutoStream implements BatchStream {
  constructor(
    private readonly server: {
      sent: number;
      fault: Fault;
      batches: BackendBatch[];
      open: number;
      peak: number;
    },
  ) {}
  async send(batch: BackendBatch): Promise<BatchOutcome> {
    const n = this.server.sent++;
    this.server.open++;
    this.server.peak = Math.max(this.server.peak, this.server.open);
    this.server.batches.push(batch);
    const wrong = this.server.fault(n);
    const data = new Float32Array(batch.texts.length * DIM);
    batch.texts.forEach((text, r) => {
      // A wrong answer: another unit vector, as other weights would give.
      const v = vectorOf(wrong ? `${text} (faulty)` : text);
      data.set(v, r * DIM);
    });
    await new Promise((resolve) => setImmediate(resolve));
    this.server.open--;
    return {
      ok: true,
      vectors: {
        rows: batch.texts.length,
        dim: DIM,
        data: new Uint8Array(data.buffer),
        tokenCounts: batch.texts.map(() => 3),
        truncated: batch.texts.map(() => false),
      },
    };
  }
  close(): void {}
}

function server(target: string, fault: Fault) {
  const state = { sent: 0, fault, batches: [] as BackendBatch[], open: 0, peak: 0 };
  const backend = new MemoryBackend(target, () => new AutoStream(state));
  const session: ServerSession = {
    target,
    backend,
    info: MEMORY_DESCRIPTION,
    models: new Map([["m", MODEL]]),
  };
  return { session, state };
}

const text = (row: number) => `paragraph ${row}`;

function work(batches: number, rows = 4): WorkItem[] {
  return Array.from({ length: batches }, (_, b) => ({
    alias: "m",
    batchNo: b,
    rows: Uint32Array.from({ length: rows }, (_, r) => b * rows + r),
    priorAttempts: 0,
    paddedTokens: rows * 3,
  }));
}

/** Known rows the way the run keeps them: the probe texts, and rows a server's checked batches held. */
class TestSpots implements SpotHooks {
  readonly failures: { server: string; redone: number[] }[] = [];
  readonly learnedRows: SpotRow[] = [];
  readonly probes: SpotRow[] = ["probe a", "probe b", "probe c"].map((t, i) => ({
    text: t,
    tokens: 3,
    vector: vectorOf(t),
    server: "",
    label: `probe ${i}`,
    ids: null,
    truncatedIds: false,
  }));
  constructor(
    readonly rate: number,
    readonly maxHeldRows = 0,
    readonly tolerance = 0.999,
  ) {}
  place(item: WorkItem, payload: Parameters<SpotHooks["place"]>[1], srv: string, count: number) {
    const rows = pickSpots([...this.probes, ...this.learnedRows], count, 3, 1e9, srv) as SpotRow[];
    const placed = withSpots(payload, rows, item.batchNo + 1);
    return placed && rows.length > 0 ? { rows, payload: placed } : null;
  }
  checkBatch(_alias: string, srv: string): SpotRow[] {
    return this.probes.filter((p) => p.server !== srv).slice(0, 2);
  }
  learned(item: WorkItem, embeddings: Vectors, srv: string): void {
    const data = new Float32Array(embeddings.data.slice().buffer);
    this.learnedRows.push({
      text: text(item.rows[0] as number),
      tokens: 3,
      vector: data.slice(0, DIM),
      server: srv,
      label: `row ${item.rows[0]}`,
      ids: null,
      truncatedIds: false,
    });
  }
  failed(srv: string, _alias: string, _detail: string, redone: readonly WorkItem[]): void {
    this.failures.push({ server: srv, redone: redone.map((i) => i.batchNo) });
  }
}

interface Written {
  server: string;
  right: boolean;
}

async function dispatch(
  servers: ReturnType<typeof server>[],
  batches: WorkItem[],
  spots: TestSpots,
  maxWorkers = 2,
): Promise<{ written: Map<number, Written>; notes: string[]; error: unknown }> {
  const written = new Map<number, Written>();
  const notes: string[] = [];
  const dispatcher = new Dispatcher(
    servers.map((s) => s.session),
    { maxWorkers, batchTimeoutMs: 1000, serverTimeoutMs: 10_000, maxAttempts: 3 },
    {
      payload: (item) => ({ texts: Array.from(item.rows, text), tokens: undefined }),
      accept: (item, embeddings, srv) => {
        assert.equal(embeddings.rows, item.rows.length, "the spot rows are split off");
        const data = new Float32Array(embeddings.data.slice().buffer);
        const right = Array.from(item.rows).every((row, r) =>
          vectorOf(text(row)).every((x, d) => Math.abs(x - (data[r * DIM + d] ?? 0)) < 1e-6),
        );
        assert.ok(!written.has(item.batchNo), `batch ${item.batchNo} written once`);
        written.set(item.batchNo, { server: srv, right });
      },
      describe: (item) => `batch ${item.batchNo}`,
      attemptFailed: () => {},
      serverChanged: (target, state, detail) => notes.push(`${target} ${state} ${detail}`),
      reopen: () => Promise.reject(new ServerRefusedError("not in this test")),
      check: () => null,
      retried: () => {},
      spots,
    },
    new Map([["m", MODEL]]),
    [],
  );
  let error: unknown = null;
  await dispatcher.run(batches, new AbortController().signal).catch((err: unknown) => {
    error = err;
  });
  return { written, notes, error };
}

const never: Fault = () => false;

test("two servers, one right on the probe but wrong on every batch: it is kept out, all rows right", async () => {
  const good = server("good:1", never);
  const bad = server("bad:1", () => true);
  const spots = new TestSpots(0.1);
  const { written, notes, error } = await dispatch([good, bad], work(40), spots);
  assert.equal(error, null);
  assert.equal(written.size, 40);
  for (const [b, w] of written) assert.ok(w.right, `batch ${b} is right`);
  assert.ok([...written.values()].every((w) => w.server === "good:1"));
  assert.equal(spots.failures.length, 1);
  assert.equal(spots.failures[0]?.server, "bad:1");
  assert.ok((spots.failures[0]?.redone.length ?? 0) > 0, "its unchecked batches are redone");
  assert.ok(notes.some((n) => /bad:1 retired server bad:1 failed a spot check of m/.test(n)));
});

test("two servers, one going wrong after 6 batches: its later batches are redone by the other", async () => {
  const good = server("good:1", never);
  const bad = server("bad:1", (n) => n >= 6);
  const spots = new TestSpots(0.1);
  const { written, error } = await dispatch([good, bad], work(60), spots);
  assert.equal(error, null);
  assert.equal(written.size, 60);
  for (const [b, w] of written) assert.ok(w.right, `batch ${b} is right`);
  assert.ok(
    [...written.values()].some((w) => w.server === "bad:1"),
    "what it got right before it went wrong is kept",
  );
  assert.equal(spots.failures.length, 1);
});

test("one server going wrong after 5 batches: the run stops with one line and nothing wrong written", async () => {
  const only = server("only:1", (n) => n >= 5);
  const spots = new TestSpots(0.1);
  const { written, error } = await dispatch([only], work(30), spots);
  assert.ok(error instanceof ServerError, String(error));
  assert.match(
    (error as Error).message,
    /^no server is left to embed with: server only:1 failed a spot check of m \((probe|row) .*below --probe_tolerance 0\.999\)/,
  );
  assert.ok(written.size > 0 && written.size < 30, `${written.size} batches written`);
  for (const [b, w] of written) assert.ok(w.right, `batch ${b} is right`);
});

test("the end of the run: a server's last batches are held until a batch of known rows passes", async () => {
  // Batches of 4 rows at 1%: one spot row per 25 batches, so the last ones carry none.
  const only = server("only:1", never);
  const spots = new TestSpots(0.01);
  const { written, error } = await dispatch([only], work(30), spots);
  assert.equal(error, null);
  assert.equal(written.size, 30);
  const checks = only.state.batches.filter((b) => b.texts.every((t) => t.startsWith("probe")));
  assert.ok(checks.length >= 1, "a batch of known rows alone was sent");

  // Wrong only in its last batches, which carry no spot rows: the final check catches it.
  const late = server("late:1", (n) => n >= 28);
  const caught = await dispatch([late], work(30), new TestSpots(0.01));
  assert.ok(caught.error instanceof ServerError);
  for (const [b, w] of caught.written) assert.ok(w.right, `batch ${b} is right`);
  assert.ok(caught.written.size < 30);
});

test("--spot_check 0: no known rows are sent and each answer is written at once", async () => {
  const bad = server("bad:1", () => true);
  const spots = new TestSpots(0);
  const { written, error } = await dispatch([bad], work(10), spots);
  assert.equal(error, null);
  assert.equal(written.size, 10);
  assert.ok(bad.state.batches.every((b) => b.texts.every((t) => t.startsWith("paragraph"))));
  assert.equal(bad.state.batches.length, 10);
});

test("a server holds at most --checkpoint_interval rows unchecked: a batch of known rows alone checks them", async () => {
  // 4-row batches at 1% carry a spot row once in 25 batches; 8 held rows = 2 batches.
  const only = server("only:1", (n) => n >= 24);
  const { written, error } = await dispatch([only], work(30), new TestSpots(0.01, 8));
  assert.ok(error instanceof ServerError);
  const checks = only.state.batches.filter((b) => b.texts.every((t) => t.startsWith("probe")));
  assert.ok(checks.length >= 5, `${checks.length} batches of known rows alone`);
  // What was checked before it went wrong is written, and only that.
  assert.ok(written.size >= 12, `${written.size} batches written`);
  for (const [b, w] of written) assert.ok(w.right, `batch ${b} is right`);
});

test("a batch of known rows takes a place in the window: --max_workers 1 never has two requests in flight", async () => {
  // A server that regroups concurrent requests (TEI, infinity) would otherwise put a check
  // beside an ordinary batch and change the bits of its rows.
  const only = server("only:1", never);
  const { written, error } = await dispatch([only], work(30), new TestSpots(0.01, 8), 1);
  assert.equal(error, null);
  assert.equal(written.size, 30);
  const checks = only.state.batches.filter((b) => b.texts.every((t) => t.startsWith("probe")));
  assert.ok(checks.length >= 5, `${checks.length} batches of known rows alone`);
  assert.equal(only.state.peak, 1, "one request at a time, checks included");
});
