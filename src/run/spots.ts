import type { ServerLimits, TokenCounter, Vectors } from "../backend/types.js";
import type { Ledger } from "../checkpoint/ledger.js";
import { PROBE_TEXTS } from "../checks/probe-texts.js";
import { pickSpots, type SpotRow, withSpots } from "../checks/spot.js";
import type { SpotHooks, WorkItem } from "../dispatch/dispatcher.js";
import type { BatchPayload } from "../dispatch/payload.js";
import type { RowReader } from "../input/rows.js";
import type { CorpusIndex } from "../input/scan.js";
import type { ModelRun } from "./model-run.js";

/** Rows other servers embedded, kept per model as known rows (one per batch, the latest). */
const LEARNED_PER_MODEL = 64;
/** Known rows in a batch of them alone (the end-of-run check). */
const CHECK_ROWS = 4;

/**
 * The known rows of a run's spot checks (issue 16), per model: the stored
 * probe texts with their vectors, and a few rows that servers embedded and
 * that passed their checks (a server is never checked with its own). Batches
 * of token ids carry the probe texts as ids, counted once per model at the
 * start by a server's token counter; a batch of known rows alone is sent as
 * texts.
 */
export class SpotSource implements SpotHooks {
  private readonly probes = new Map<string, SpotRow[]>();
  private readonly learnedRows = new Map<string, SpotRow[]>();

  private constructor(
    readonly rate: number,
    readonly tolerance: number,
    readonly maxHeldRows: number,
    private readonly runs: ReadonlyMap<string, ModelRun>,
    private readonly reader: RowReader,
    private readonly corpus: Pick<CorpusIndex, "lineNumbers">,
    private readonly ledger: Ledger,
  ) {}

  /**
   * The probe rows of every model still to embed, with their token counts
   * (and ids where batches carry ids) from `counter`; without a counter the
   * counts are estimated from the length and batches of ids take no probe rows.
   */
  static async open(
    settings: { rate: number; tolerance: number; timeoutMs: number; maxHeldRows: number },
    runs: ReadonlyMap<string, ModelRun>,
    ledger: Ledger,
    reader: RowReader,
    corpus: Pick<CorpusIndex, "lineNumbers">,
    counter: (alias: string) => { counter: TokenCounter; modelKey: string } | null,
  ): Promise<SpotSource> {
    const source = new SpotSource(
      settings.rate,
      settings.tolerance,
      settings.maxHeldRows,
      runs,
      reader,
      corpus,
      ledger,
    );
    if (settings.rate === 0) return source;
    for (const [alias, run] of runs) {
      const stored = ledger.probes(alias);
      if (!stored || stored.vectors.rows !== PROBE_TEXTS.length) continue;
      const wantIds = run.store !== null;
      const found = counter(alias);
      const counted = found
        ? await found.counter
            .countTokens(found.modelKey, [...PROBE_TEXTS], wantIds, settings.timeoutMs)
            .catch(() => null)
        : null;
      const ids = counted?.tokens ? splitIds(counted.tokens) : null;
      source.probes.set(alias, probeRows(stored.vectors, counted?.counts ?? null, ids));
    }
    return source;
  }

  place(
    item: WorkItem,
    payload: BatchPayload,
    server: string,
    count: number,
    limits: ServerLimits | null,
  ): ReturnType<SpotHooks["place"]> {
    const rows = item.rows.length;
    // The batch's padded length: a spot row no longer than it changes no padding.
    const length =
      item.paddedTokens && rows > 0
        ? Math.ceil(item.paddedTokens / rows)
        : Number.POSITIVE_INFINITY;
    let room = count;
    if (limits?.maxBatchSize) room = Math.min(room, limits.maxBatchSize - rows);
    if (limits?.maxBatchTokens && Number.isFinite(length) && item.paddedTokens) {
      room = Math.min(room, Math.floor((limits.maxBatchTokens - item.paddedTokens) / length));
    }
    if (room <= 0) return null;
    const fits = (k: SpotRow) =>
      k.tokens <= length && (payload.tokens === undefined || k.ids !== null);
    // As many rows as the stored probes can fill: they are the same in every run and on
    // every server, so the batch's shape is too; learned rows may stand in for some of them.
    const fill = Math.min(room, this.probeRows(item.alias).filter(fits).length);
    if (fill <= 0) return null;
    const picked = pickSpots(
      this.known(item.alias).filter(fits),
      fill,
      Number.isFinite(length) ? length : 0,
      Number.POSITIVE_INFINITY,
      server,
    ) as SpotRow[];
    if (picked.length === 0) return null;
    const placed = withSpots(payload, picked, (item.batchNo * 2654435761) ^ rows);
    return placed ? { rows: picked, payload: placed } : null;
  }

  checkBatch(alias: string, server: string): SpotRow[] {
    const known = this.known(alias).filter((k) => k.server !== server);
    // The shortest, so the check costs little; probes and learned rows alike.
    return [...known].sort((a, b) => a.tokens - b.tokens).slice(0, CHECK_ROWS);
  }

  learned(item: WorkItem, embeddings: Vectors, server: string): void {
    if (this.rate === 0 || item.rows.length === 0) return;
    const r = Math.floor(item.rows.length / 2);
    const row = item.rows[r] as number;
    const run = this.runs.get(item.alias);
    const { dim } = embeddings;
    // A copy of the row alone: the answer's bytes may be a Node Buffer, whose slice() is a
    // view of the whole message (or pool), and whose .buffer would give every row of it.
    const bytes = new Uint8Array(embeddings.data.subarray(r * dim * 4, (r + 1) * dim * 4));
    const ids = run?.store?.holds([row]) ? splitIds(run.store.batch([row]))[0] : undefined;
    const list = this.learnedRows.get(item.alias) ?? [];
    list.push({
      text: this.reader.texts([row])[0] ?? "",
      tokens: embeddings.tokenCounts[r] ?? 0,
      vector: new Float32Array(bytes.buffer),
      server,
      label: `input line ${this.corpus.lineNumbers[row] ?? row + 1}`,
      ids: ids?.ids ?? null,
      truncatedIds: ids?.truncated ?? false,
    });
    if (list.length > LEARNED_PER_MODEL) list.shift();
    this.learnedRows.set(item.alias, list);
  }

  failed(_server: string, alias: string, _detail: string, redone: readonly WorkItem[]): void {
    this.ledger.addSpotFailure(alias);
    for (const item of redone) this.ledger.addSpotRedone(item.alias);
    // Rows the failed server computed are no longer known rows.
    for (const [a, list] of this.learnedRows) {
      this.learnedRows.set(
        a,
        list.filter((k) => k.server !== _server),
      );
    }
  }

  private probeRows(alias: string): SpotRow[] {
    // Stored during the run (no server was ready at the start): counts estimated, no ids.
    if (!this.probes.has(alias)) {
      const stored = this.ledger.probes(alias);
      if (stored && stored.vectors.rows === PROBE_TEXTS.length) {
        this.probes.set(alias, probeRows(stored.vectors, null, null));
      }
    }
    return this.probes.get(alias) ?? [];
  }

  private known(alias: string): SpotRow[] {
    return [...this.probeRows(alias), ...(this.learnedRows.get(alias) ?? [])];
  }
}

/** The probe texts as known rows; counts estimated from the length where none were counted. */
function probeRows(
  vectors: { dim: number; data: Float32Array },
  counts: readonly number[] | null,
  ids: { ids: Uint32Array; truncated: boolean }[] | null,
): SpotRow[] {
  const { dim, data } = vectors;
  return PROBE_TEXTS.map((text, i) => ({
    text,
    tokens: counts?.[i] ?? Math.ceil(text.length / 4) + 2,
    vector: data.slice(i * dim, (i + 1) * dim),
    server: "",
    label: `probe ${i}`,
    ids: ids?.[i]?.ids ?? null,
    truncatedIds: ids?.[i]?.truncated ?? false,
  }));
}

/** Token ids row by row. */
function splitIds(tokens: {
  ids: Uint8Array;
  lengths: readonly number[];
  truncated: readonly boolean[];
}): { ids: Uint32Array; truncated: boolean }[] {
  const all = new Uint32Array(
    tokens.ids.buffer.slice(tokens.ids.byteOffset, tokens.ids.byteOffset + tokens.ids.byteLength),
  );
  const out: { ids: Uint32Array; truncated: boolean }[] = [];
  let at = 0;
  tokens.lengths.forEach((length, i) => {
    out.push({ ids: all.slice(at, at + length), truncated: tokens.truncated[i] ?? false });
    at += length;
  });
  return out;
}
