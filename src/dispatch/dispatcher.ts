import type {
  BackendError,
  BatchStream,
  LoadedModel,
  ServerLimits,
  Vectors,
} from "../backend/types.js";
import {
  compareSpots,
  type SpotPayload,
  type SpotRow,
  splitSpots,
  spotSlots,
} from "../checks/spot.js";
import { ExitError, ServerError } from "../errors.js";
import { identityDifferences, identityOf } from "../model/identity.js";
import type { BatchPayload } from "./payload.js";
import { type ServerSession, sleep } from "./servers.js";

/** A batch waiting for, or on its way to, a server. */
export interface WorkItem {
  readonly alias: string;
  readonly batchNo: number;
  readonly rows: Uint32Array;
  /** Failed attempts in earlier runs (the dispatcher counts this run's). */
  readonly priorAttempts: number;
  /** Its padded tokens as planned (what spot rows must fit); absent when unknown. */
  readonly paddedTokens?: number;
  /** Rows that take the vectors of rows of the batch: uint32 pairs (row, index in rows). */
  readonly followers?: Uint32Array;
}

/** Time as the dispatcher sees it: real timers, or a fake clock in tests. */
export interface Clock {
  /** Calls `fn` after `ms`; returns a function that cancels it. */
  after(ms: number, fn: () => void): () => void;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = {
  after: (ms, fn) => {
    const timer = setTimeout(fn, ms);
    return () => clearTimeout(timer);
  },
  sleep,
};

/** What the dispatcher is given to tell time (servers are reached through their backends). */
export interface DispatchEnvironment {
  readonly clock?: Clock;
}

export interface DispatchOptions {
  /** Batches in flight per server. */
  readonly maxWorkers: number;
  readonly batchTimeoutMs: number;
  /** How long the run waits with no server up before it stops. */
  readonly serverTimeoutMs: number;
  /** Attempts of one batch before the run stops. */
  readonly maxAttempts: number;
}

/** "removed": drained by removeServer(), gets no more work. */
export type ServerState = "up" | "down" | "retired" | "removed";

export interface DispatchHooks {
  /** What the batch carries: its texts, or their token ids. */
  payload(item: WorkItem): BatchPayload;
  /** Writes a result; `attempts` counts this one. Synchronous; throwing stops the run. */
  accept(item: WorkItem, embeddings: Vectors, server: string, attempts: number): void;
  /** Where a batch's rows are, for messages; with `row`, where that row of it is. */
  describe(item: WorkItem, row?: number): string;
  /** A failed attempt, with the failed attempts so far across runs. */
  attemptFailed(item: WorkItem, attempts: number): void;
  serverChanged(target: string, state: ServerState, detail: string): void;
  /**
   * Re-checks a server that joins or came back: health, models (same dim and
   * weights), its probe vectors. Throwing ServerRefusedError keeps it out for
   * the run; any other error is retried with backoff.
   */
  reopen(session: ServerSession): Promise<ServerSession>;
  /** What is wrong with a batch's vectors (NaN, Inf, zero or off-norm rows), or null. */
  check(item: WorkItem, embeddings: Vectors): string | null;
  /** A batch whose vectors failed the check is sent again (to another server when there is one). */
  retried(item: WorkItem, server: string, problem: string): void;
  /** Spot checks; absent or rate 0: every checked answer is written at once. */
  spots?: SpotHooks;
}

/**
 * Spot checks (issue 16): ordinary batches carry a few rows whose vectors are
 * known, and a server's answers are held, not written, until a later check on
 * it passes; a failed check keeps it out and its held batches go back to the
 * queue, so nothing it computed since its last passed check is written.
 */
export interface SpotHooks {
  /** Spot rows per row sent (--spot_check); 0 turns the checks off. */
  readonly rate: number;
  /** Least cosine of a spot row with its known vector (--probe_tolerance). */
  readonly tolerance: number;
  /**
   * Held rows of a server past which a batch of known rows alone checks them
   * (the run's --checkpoint_interval: answers become durable no later than without checks).
   */
  readonly maxHeldRows: number;
  /**
   * Up to `count` known rows for `item` (never `server`'s own), that fit its
   * padding and the server's limits, placed inside `payload`; null when none fits.
   * How many it places must depend on the batch and the server's limits alone,
   * never on what was sent before (a resumed run sends the same shapes).
   */
  place(
    item: WorkItem,
    payload: BatchPayload,
    server: string,
    count: number,
    limits: ServerLimits | null,
  ): { rows: SpotRow[]; payload: SpotPayload } | null;
  /**
   * Known rows (never `server`'s own) for a batch of them alone, sent as texts:
   * for a server's held batches when no batch is left to carry them (the end of the run).
   */
  checkBatch(alias: string, server: string): SpotRow[];
  /** A batch's checked answer: rows other servers may be checked with. */
  learned(item: WorkItem, embeddings: Vectors, server: string): void;
  /** A server failed a spot check; `redone` of its batches go back to the queue. */
  failed(server: string, alias: string, detail: string, redone: readonly WorkItem[]): void;
}

/** A server that must not get work in this run (its probe vectors differ): not retried. */
export class ServerRefusedError extends ServerError {}

class ServerSlot {
  state: ServerState = "up";
  stream: BatchStream | null = null;
  inFlight = new Set<WorkItem>();
  rowsDone = 0;
  lastError = "";
  /** Answers held until a spot check on this server passes. */
  held: { item: WorkItem; vectors: Vectors }[] = [];
  /** The spot rows each batch in flight carries. */
  readonly spotsOf = new Map<WorkItem, { rows: SpotRow[]; positions: number[] }>();
  /** The batch of known rows only in flight, if any. */
  check: { alias: string; rows: SpotRow[] } | null = null;

  constructor(public session: ServerSession) {}

  get target(): string {
    return this.session.target;
  }

  modelKey(alias: string): string {
    const key = this.session.models.get(alias)?.modelKey;
    if (!key) throw new Error(`server ${this.target} has no model ${alias}`);
    return key;
  }
}

const BACKOFF_START_MS = 250;
/** Held answers of one server past which a batch of known rows alone is sent to check them. */
const MAX_HELD_BATCHES = 32;
const BACKOFF_MAX_MS = 5000;

/**
 * Hands batches from one shared queue to whichever server has room (each
 * server has one stream and a window of maxWorkers batches), so faster
 * servers do more. A server that fails is taken out, its batches go back to
 * the queue, and it is retried with exponential backoff. A batch that fails
 * maxAttempts times stops the run; so does having no server up for
 * serverTimeoutMs. A batch whose vectors fail the check hook is sent to
 * another server (the same one when no other is up) and stops the run when it
 * fails again. A server that reopen() refuses (ServerRefusedError) is kept out
 * for the run; with every server kept out the run stops at once.
 */
export class Dispatcher {
  private readonly slots: ServerSlot[];
  private readonly queue: WorkItem[] = [];
  private nextBatchId = 1;
  private outstanding = 0;
  private settle: ((err?: Error) => void) | null = null;
  private finished = false;
  private allDownTimer: (() => void) | null = null;
  /** Failed attempts of each batch across runs: the dispatcher's, not the item's. */
  private readonly attempts = new Map<WorkItem, number>();
  /** Batches whose vectors failed the check once: the server and the problem. */
  private readonly failedCheck = new Map<WorkItem, { server: string; problem: string }>();
  private readonly clock: Clock;
  private readonly spotRate: number;

  /**
   * `sessions` are the servers ready at the start; `waiting` are servers not
   * reachable yet, which join when they come up. Every server must hold the
   * same models as `reference` (same dim and weights) to take batches.
   */
  constructor(
    sessions: readonly ServerSession[],
    private readonly options: DispatchOptions,
    private readonly hooks: DispatchHooks,
    private readonly reference: ReadonlyMap<string, LoadedModel>,
    waiting: readonly ServerSession[],
    env: DispatchEnvironment = {},
  ) {
    this.clock = env.clock ?? realClock;
    this.spotRate = hooks.spots?.rate ?? 0;
    this.slots = sessions.map((s) => new ServerSlot(s));
    for (const session of waiting) {
      const slot = new ServerSlot(session);
      slot.state = "down";
      slot.lastError = "not reachable at the start";
      this.slots.push(slot);
    }
  }

  /** Rows each server has embedded this run, and its state. */
  serverShares(): {
    target: string;
    state: ServerState;
    rows: number;
    detail: string;
    inFlight: number;
  }[] {
    return this.slots.map((s) => ({
      target: s.target,
      state: s.state,
      rows: s.rowsDone,
      detail: s.lastError,
      inFlight: s.inFlight.size,
    }));
  }

  /**
   * A server that joins during the run (e.g. a new address of a DNS name): it
   * is opened, checked and probed by the reopen hook like a server that comes
   * back, and then takes work. Before run() it simply waits for the start.
   */
  addServer(session: ServerSession): void {
    if (this.slots.some((s) => s.target === session.target && s.state !== "removed")) return;
    const slot = new ServerSlot(session);
    slot.state = "down";
    slot.lastError = "joining";
    this.slots.push(slot);
    if (this.settle && !this.finished) void this.revive(slot, 0);
  }

  /**
   * Drains a server (e.g. an address a DNS name no longer has): it gets no
   * more work, its batches in flight go back to the queue at no cost to their
   * attempts (a late answer is ignored), and its stream is closed.
   */
  removeServer(target: string): void {
    const slot = this.slots.find((s) => s.target === target && s.state !== "removed");
    if (!slot) return;
    const wasUp = slot.state === "up";
    slot.state = "removed";
    slot.lastError = "removed";
    const orphans = [...this.unverified(slot), ...slot.inFlight];
    slot.inFlight.clear();
    slot.stream?.close();
    slot.stream = null;
    this.hooks.serverChanged(slot.target, "removed", "");
    if (this.finished || !this.settle) return;
    for (const item of orphans.reverse()) this.queue.unshift(item);
    if (wasUp) this.watchAllDown();
    this.pump();
  }

  run(items: readonly WorkItem[], signal: AbortSignal): Promise<void> {
    this.queue.push(...items);
    for (const item of items) this.attempts.set(item, item.priorAttempts);
    this.outstanding = items.length;
    return new Promise<void>((resolve, reject) => {
      this.settle = (err) => {
        if (this.finished) return;
        this.finished = true;
        signal.removeEventListener("abort", onAbort);
        this.allDownTimer?.();
        for (const slot of this.slots) slot.stream?.close();
        if (err) reject(err);
        else resolve();
      };
      const onAbort = () => this.settle?.(signal.reason as Error);
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort);
      for (const slot of this.slots) {
        if (slot.state === "up") slot.stream = this.openStream(slot);
        else void this.revive(slot);
      }
      // Every server may still be joining: the wait for one is bounded like any other.
      this.watchAllDown();
      if (this.outstanding === 0) this.settle(undefined);
      else this.pump();
    });
  }

  private openStream(slot: ServerSlot): BatchStream {
    const stream = slot.session.backend.openStream((err) => {
      if (slot.stream === stream) this.serverFailed(slot, err);
    });
    return stream;
  }

  /** Fills every up server's window from the queue. */
  private pump(): void {
    for (const slot of this.slots) {
      // A batch of known rows takes a place in the window like any other: a server that
      // regroups concurrent requests into its own forward batches (TEI, infinity) must not
      // get one beside an ordinary batch that --max_workers 1 keeps alone (the bits of its
      // rows would depend on when the check was sent).
      const inFlight = () => slot.inFlight.size + (slot.check ? 1 : 0);
      if (
        !this.finished &&
        slot.state === "up" &&
        !slot.check &&
        inFlight() < this.options.maxWorkers &&
        this.holdsTooMuch(slot)
      ) {
        this.sendCheck(slot);
      }
      while (!this.finished && slot.state === "up" && inFlight() < this.options.maxWorkers) {
        const at = this.nextFor(slot);
        if (at < 0) {
          if (slot.held.length > 0 && !slot.check) this.sendCheck(slot);
          break;
        }
        const [item] = this.queue.splice(at, 1);
        if (item) this.send(slot, item);
      }
    }
  }

  /** Past what a server may hold before a batch of known rows alone checks it. */
  private holdsTooMuch(slot: ServerSlot): boolean {
    if (slot.held.length >= MAX_HELD_BATCHES) return true;
    const limit = this.hooks.spots?.maxHeldRows ?? 0;
    if (limit <= 0) return false;
    let rows = 0;
    for (const h of slot.held) rows += h.item.rows.length;
    return rows >= limit;
  }

  /** Held answers and spot rows in flight are forgotten: their batches go back to the queue. */
  private unverified(slot: ServerSlot): WorkItem[] {
    const items = slot.held.map((h) => h.item);
    slot.held = [];
    slot.spotsOf.clear();
    slot.check = null;
    return items;
  }

  /**
   * A batch of known rows alone, sent as texts (so that a model whose batches
   * carry token ids needs none for it): it checks the server's held answers
   * of one model when no ordinary batch is left to carry spot rows.
   */
  private sendCheck(slot: ServerSlot): void {
    const stream = slot.stream;
    const spots = this.hooks.spots;
    const first = slot.held[0];
    if (!stream || !spots || !first) return;
    const alias = first.item.alias;
    let rows: SpotRow[];
    let modelKey: string;
    try {
      rows = spots.checkBatch(alias, slot.target);
      modelKey = slot.modelKey(alias);
    } catch (err) {
      this.settle?.(err as Error);
      return;
    }
    if (rows.length === 0) {
      // Nothing known to check it with: the per-batch checks are all there is.
      this.flush(slot, alias);
      this.settled();
      return;
    }
    const check = { alias, rows };
    slot.check = check;
    const batch = {
      batchId: this.nextBatchId++,
      modelKey,
      texts: rows.map((r) => r.text),
      tokens: undefined,
    };
    stream.send(batch, this.options.batchTimeoutMs).then(
      (outcome) => {
        if (this.finished || slot.check !== check) return;
        slot.check = null;
        if (!outcome.ok) {
          // A server that cannot embed a few known texts is not trusted with its held answers.
          this.serverFailed(slot, outcome.error);
          return;
        }
        const got = outcome.vectors;
        const comparison =
          got.rows === rows.length
            ? compareSpots(
                rows,
                splitSpots(
                  got,
                  rows.map((_, i) => i),
                ).spots,
                spots.tolerance,
              )
            : { pass: false, worstCosine: Number.NaN, worstSpot: -1 };
        if (!comparison.pass) {
          this.spotFailed(slot, alias, spotDetail(rows, comparison, got.rows, spots.tolerance), []);
          return;
        }
        this.flush(slot, alias);
        this.settled();
      },
      () => {
        // The stream broke: serverFailed() puts the held batches back.
      },
    );
  }

  /** Writes the held answers of one model on a server after a passed check. */
  private flush(slot: ServerSlot, alias: string): boolean {
    const keep: typeof slot.held = [];
    const go: typeof slot.held = [];
    for (const h of slot.held) (h.item.alias === alias ? go : keep).push(h);
    slot.held = keep;
    for (const h of go) if (!this.write(slot, h.item, h.vectors)) return false;
    return true;
  }

  /** Hands one checked answer to accept(); false when that stopped the run. */
  private write(slot: ServerSlot, item: WorkItem, embeddings: Vectors): boolean {
    try {
      this.hooks.accept(item, embeddings, slot.target, (this.attempts.get(item) ?? 0) + 1);
      this.hooks.spots?.learned(item, embeddings, slot.target);
    } catch (err) {
      this.settle?.(err as Error);
      return false;
    }
    slot.rowsDone += item.rows.length;
    this.outstanding--;
    return true;
  }

  /** After answers were written: the run ends when none is left, else more work goes out. */
  private settled(): void {
    if (this.finished) return;
    if (this.outstanding === 0) this.settle?.(undefined);
    else this.pump();
  }

  /**
   * A spot check failed: the server is kept out for the run, and every batch
   * it answered since its last passed check (held, never written) and every
   * batch on its way to it goes back to the queue, at no cost to their
   * attempts, for another server. With no other server the run stops.
   */
  private spotFailed(slot: ServerSlot, alias: string, detail: string, also: WorkItem[]): void {
    const redo = [...this.unverified(slot), ...also, ...slot.inFlight];
    slot.inFlight.clear();
    slot.stream?.close();
    slot.stream = null;
    const line = `server ${slot.target} failed a spot check of ${alias} (${detail}); it is kept out of the run and its ${redo.length} unchecked batch${redo.length === 1 ? "" : "es"} are redone`;
    try {
      this.hooks.spots?.failed(slot.target, alias, detail, redo);
    } catch (err) {
      this.settle?.(err as Error);
      return;
    }
    for (const item of [...redo].reverse()) this.queue.unshift(item);
    this.retire(slot, line);
    if (this.finished) return;
    this.watchAllDown();
    this.pump();
  }

  /**
   * The first queued batch this server may take: a batch whose vectors failed
   * the check on it waits for another server, unless no other one is up.
   */
  private nextFor(slot: ServerSlot): number {
    const otherUp = this.slots.some((s) => s !== slot && s.state === "up");
    if (!otherUp) return this.queue.length > 0 ? 0 : -1;
    return this.queue.findIndex((item) => this.failedCheck.get(item)?.server !== slot.target);
  }

  private send(slot: ServerSlot, item: WorkItem): void {
    const stream = slot.stream;
    if (!stream) return;
    slot.inFlight.add(item);
    let payload: BatchPayload;
    let modelKey: string;
    try {
      payload = this.hooks.payload(item);
      modelKey = slot.modelKey(item.alias);
    } catch (err) {
      this.settle?.(err as Error);
      return;
    }
    const spots = this.hooks.spots;
    if (spots && this.spotRate > 0) {
      // How many the batch carries is the batch's alone (the same on every server and in
      // every run); which known rows fill them is not, and changes no other row's bits.
      const owed = spotSlots(item.alias, item.batchNo, item.rows.length, this.spotRate);
      if (owed > 0) {
        let placed: ReturnType<SpotHooks["place"]>;
        try {
          placed = spots.place(item, payload, slot.target, owed, slot.session.info?.limits ?? null);
        } catch (err) {
          this.settle?.(err as Error);
          return;
        }
        if (placed && placed.rows.length > 0) {
          payload = { texts: placed.payload.texts, tokens: placed.payload.tokens };
          slot.spotsOf.set(item, { rows: placed.rows, positions: placed.payload.positions });
        }
      }
    }
    const batchId = this.nextBatchId++;
    stream.send({ batchId, modelKey, ...payload }, this.options.batchTimeoutMs).then(
      (outcome) => {
        if (this.finished || !slot.inFlight.delete(item)) return;
        if (outcome.ok) this.completed(slot, item, outcome.vectors);
        else this.batchFailed(slot, item, outcome.error);
      },
      () => {
        // The stream broke: serverFailed() requeues everything that was on it.
      },
    );
  }

  private completed(slot: ServerSlot, item: WorkItem, answer: Vectors): void {
    const spotted = slot.spotsOf.get(item);
    slot.spotsOf.delete(item);
    let embeddings = answer;
    if (spotted) {
      const tolerance = this.hooks.spots?.tolerance ?? 1;
      const expected = item.rows.length + spotted.rows.length;
      const split = answer.rows === expected ? splitSpots(answer, spotted.positions) : null;
      const comparison = split
        ? compareSpots(spotted.rows, split.spots, tolerance)
        : { pass: false, worstCosine: Number.NaN, worstSpot: -1 };
      if (!split || !comparison.pass) {
        this.spotFailed(
          slot,
          item.alias,
          spotDetail(spotted.rows, comparison, answer.rows, tolerance, expected),
          [item],
        );
        return;
      }
      embeddings = split.own;
    }
    let problem: string | null;
    try {
      problem = this.hooks.check(item, embeddings);
    } catch (err) {
      this.settle?.(err as Error);
      return;
    }
    // A passed spot check vouches for the answers held before it.
    if (spotted && !this.flush(slot, item.alias)) return;
    if (problem !== null) {
      this.checkFailed(slot, item, problem);
      return;
    }
    if (this.spotRate > 0 && !spotted) {
      slot.held.push({ item, vectors: embeddings });
      this.pump();
      return;
    }
    if (!this.write(slot, item, embeddings)) return;
    this.settled();
  }

  /**
   * The batch's vectors failed the check: nothing of it is written. The first
   * time it goes back to the queue for another server (the same one when it is
   * the only one up); the second time the run stops, naming the batch.
   */
  private checkFailed(slot: ServerSlot, item: WorkItem, problem: string): void {
    const before = this.failedCheck.get(item);
    if (before) {
      const servers =
        before.server === slot.target
          ? `twice from server ${slot.target}`
          : `from servers ${before.server} and ${slot.target}`;
      this.settle?.(
        new ExitError(
          `${this.hooks.describe(item)}: the vectors failed the checks ${servers} (${before.problem}; then ${problem}); nothing of the batch was written; fix the input or the servers and run the same command again`,
        ),
      );
      return;
    }
    this.failedCheck.set(item, { server: slot.target, problem });
    try {
      this.hooks.retried(item, slot.target, problem);
    } catch (err) {
      this.settle?.(err as Error);
      return;
    }
    this.queue.unshift(item);
    this.pump();
  }

  /** The server answered this batch with an error: whose fault it is, the backend says. */
  private batchFailed(slot: ServerSlot, item: WorkItem, err: BackendError): void {
    if (err.kind === "fatal" && err.row >= 0) {
      // One text the server refuses even alone: retrying cannot help, and the user knows lines.
      this.settle?.(
        new ExitError(
          `${this.hooks.describe(item, err.row)}: server ${slot.target}: ${err.code}: ${err.details}; fix or remove that line and run the same command again (the checkpoint is intact)`,
        ),
      );
      return;
    }
    if (err.kind === "fatal") {
      this.settle?.(fatalError(slot, err));
      return;
    }
    if (err.kind === "server") {
      // Lost its models, overloaded, going away: the batch goes elsewhere at no cost,
      // and so do the others it had in flight (each its own request, none at fault).
      this.serverFailed(slot, err, false);
      this.requeue(item, false, err);
      return;
    }
    this.requeue(item, true, err);
    this.pump();
  }

  private requeue(item: WorkItem, counts: boolean, err: BackendError): void {
    if (counts) {
      const attempts = (this.attempts.get(item) ?? 0) + 1;
      this.attempts.set(item, attempts);
      this.hooks.attemptFailed(item, attempts);
      if (attempts >= this.options.maxAttempts) {
        this.settle?.(
          new ExitError(
            `${this.hooks.describe(item)} failed ${attempts} times, last: ${err.code}: ${err.details}; the checkpoint is intact, fix the input or the servers and run again`,
          ),
        );
        return;
      }
    }
    this.queue.unshift(item);
  }

  /**
   * The server failed (its stream broke, or it said a batch was not its to
   * take): it is taken out and retried with backoff. The batches that were on
   * a broken stream cost an attempt, since one of them may have broken it.
   */
  private serverFailed(slot: ServerSlot, err: BackendError, orphansCount = true): void {
    if (slot.state !== "up" || this.finished) return;
    if (err.kind === "fatal") {
      this.settle?.(fatalError(slot, err));
      return;
    }
    slot.state = "down";
    slot.lastError = `${err.code}: ${err.details}`;
    const orphans = [...slot.inFlight];
    slot.inFlight.clear();
    slot.stream?.close();
    slot.stream = null;
    this.hooks.serverChanged(slot.target, "down", slot.lastError);
    for (const item of orphans.reverse()) this.requeue(item, orphansCount, err);
    // Its held answers are unchecked: redone, at no cost to their attempts.
    for (const item of this.unverified(slot).reverse()) this.queue.unshift(item);
    this.watchAllDown();
    this.pump();
    // A server that said when to come back (Retry-After) is left alone that long.
    void this.revive(slot, err.retryAfterMs > 0 ? err.retryAfterMs : BACKOFF_START_MS);
  }

  private watchAllDown(): void {
    if (this.allDownTimer || this.slots.some((s) => s.state === "up")) return;
    this.allDownTimer = this.clock.after(this.options.serverTimeoutMs, () => {
      this.allDownTimer = null;
      if (this.slots.some((s) => s.state === "up")) return;
      const reasons = this.slots.map((s) => `${s.target}: ${s.lastError}`).join("; ");
      this.settle?.(
        new ServerError(
          `no inference server up for ${Math.round(this.options.serverTimeoutMs / 1000)} s (--server_timeout): ${reasons}. What is done is kept: run the same command again to resume`,
        ),
      );
    });
  }

  /** Retries a failed server with exponential backoff until it is healthy again. */
  private async revive(slot: ServerSlot, firstDelay = BACKOFF_START_MS): Promise<void> {
    let delay = firstDelay;
    while (!this.finished && slot.state === "down") {
      if (delay > 0) await this.clock.sleep(delay);
      if (this.finished || slot.state !== "down") return;
      try {
        const fresh = await this.hooks.reopen(slot.session);
        if (this.finished || slot.state !== "down") return;
        const mismatch = compareModels(this.reference, fresh.models);
        if (mismatch) {
          this.retire(slot, `came back with a different model: ${mismatch}`);
          return;
        }
        slot.session = fresh;
        slot.state = "up";
        slot.lastError = "";
        slot.stream = this.openStream(slot);
        if (this.allDownTimer) {
          this.allDownTimer();
          this.allDownTimer = null;
        }
        this.hooks.serverChanged(slot.target, "up", "");
        this.pump();
        return;
      } catch (err) {
        if (this.finished || slot.state !== "down") return;
        if (err instanceof ServerRefusedError) {
          this.retire(slot, err.message);
          return;
        }
        slot.lastError = err instanceof Error ? err.message : String(err);
        delay = Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_START_MS, delay * 2));
      }
    }
  }

  /** Keeps a server out for the rest of the run; with none left that could work, stops it. */
  private retire(slot: ServerSlot, why: string): void {
    slot.state = "retired";
    slot.lastError = why;
    this.hooks.serverChanged(slot.target, "retired", why);
    if (this.slots.every((s) => s.state === "retired" || s.state === "removed")) {
      const reasons = this.slots
        .filter((s) => s.state === "retired")
        .map((s) => s.lastError)
        .join("; ");
      this.settle?.(new ServerError(`no server is left to embed with: ${reasons}`));
    }
  }
}

/** Why a spot check failed, for the line that keeps the server out. */
function spotDetail(
  rows: readonly SpotRow[],
  comparison: { worstCosine: number; worstSpot: number },
  gotRows: number,
  tolerance: number,
  expected = rows.length,
): string {
  if (gotRows !== expected) return `${gotRows} rows back for ${expected} sent`;
  const label = rows[comparison.worstSpot]?.label ?? "a known row";
  return `${label}: cosine ${comparison.worstCosine.toFixed(6)} with its known vector, below --probe_tolerance ${tolerance}`;
}

/** A refused key or the like: no server of the run would do better. */
function fatalError(slot: ServerSlot, err: BackendError): ServerError {
  return new ServerError(
    `server ${slot.target}: ${err.code}: ${err.details}; the checkpoint is intact, fix this and run the same command again`,
  );
}

function compareModels(
  before: ReadonlyMap<string, LoadedModel>,
  after: ReadonlyMap<string, LoadedModel>,
): string | null {
  for (const [alias, info] of before) {
    const now = after.get(alias);
    if (!now) return `${alias} missing`;
    const diff = identityDifferences(identityOf(info), identityOf(now));
    if (diff.length > 0) return `${alias}: ${diff.join(", ")}`;
  }
  return null;
}
