import { embedTexts } from "../backend/embed-texts.js";
import type { Ledger } from "../checkpoint/ledger.js";
import { compareCommon, probeRefusal } from "../checks/probe.js";
import { PROBE_SET_ID, PROBE_TEXTS } from "../checks/probe-texts.js";
import type { Matrix } from "../checks/vectors.js";
import { untilAborted } from "../dispatch/abort.js";
import { ServerRefusedError } from "../dispatch/dispatcher.js";
import type { ServerSession } from "../dispatch/servers.js";
import { ServerError } from "../errors.js";
import { RUN_METRICS } from "../metrics/run-metrics.js";
import type { Progress } from "../progress.js";

/** What the probe check needs of the run. */
export interface ProbeSettings {
  /** The models that still have batches to embed: the only ones a server is probed for. */
  readonly aliases: readonly string[];
  /** Minimum cosine of every probe vector with the stored one (--probe_tolerance). */
  readonly tolerance: number;
  /** How long one server may take for the probes (one small batch per model). */
  readonly timeoutMs: number;
  /** Ends the wait for a server's probe vectors at once (SIGINT, SIGTERM). */
  readonly signal?: AbortSignal;
}

/**
 * The probe (issue 12): before a server gets work, it embeds PROBE_TEXTS for
 * every model still to embed, and each vector must lie within cosine
 * `tolerance` of the vectors stored in the checkpoint. The first server of a
 * model (no vectors stored yet, or stored for another set of probe texts)
 * stores them instead. A server that fails is refused for the whole run
 * (ServerRefusedError): the dispatcher keeps one slot per server for all
 * models, and a server computing other vectors for one model is not trusted
 * with the others.
 */
export class ProbeGuard {
  /** Per model: the stored vectors, or the first server's embedding of them in progress. */
  private readonly references = new Map<string, Promise<Matrix>>();

  constructor(
    private readonly ledger: Ledger,
    private readonly settings: ProbeSettings,
    private readonly progress: Progress,
  ) {}

  /**
   * Probes a server for every model; throws ServerRefusedError (the probe line)
   * when its vectors differ, any other error when it could not embed them.
   */
  async check(session: ServerSession): Promise<void> {
    for (const alias of this.settings.aliases) {
      const modelKey = session.models.get(alias)?.modelKey;
      if (!modelKey) throw new Error(`server ${session.target} has no model ${alias}`);
      let reference = this.references.get(alias);
      if (!reference) {
        const stored = this.ledger.probes(alias);
        if (stored && stored.probeSet === PROBE_SET_ID) {
          // Stored by an earlier run, maybe on other hosts: this server is checked against them.
          reference = Promise.resolve(stored.vectors);
          this.references.set(alias, reference);
        } else {
          if (stored) {
            this.progress.note(
              `${alias}: the stored probe vectors are of another set of probe texts; server ${session.target} stores new ones`,
            );
          }
          const own = this.embed(session, modelKey).then(({ vectors }) => {
            this.ledger.storeProbes(alias, PROBE_SET_ID, vectors, session.target);
            return vectors;
          });
          this.references.set(alias, own);
          // A first server that could not embed them leaves the reference to the next one.
          own.catch(() => {
            if (this.references.get(alias) === own) this.references.delete(alias);
          });
          await own;
          continue;
        }
      }
      const stored = await reference;
      const fresh = await this.embed(session, modelKey);
      const comparison = compareCommon(stored, fresh.vectors, fresh.taken, this.settings.tolerance);
      if (!comparison.pass) {
        throw new ServerRefusedError(
          probeRefusal(session.target, alias, comparison, this.settings.tolerance),
        );
      }
    }
  }

  /**
   * The probe vectors of a server: one row per probe text, a zero row for a
   * text longer than the server takes (its max_text_chars), which is not sent.
   */
  private async embed(
    session: ServerSession,
    modelKey: string,
  ): Promise<{ vectors: Matrix; taken: ReadonlySet<number> }> {
    const limit = session.info?.limits?.maxTextChars ?? 0;
    const taken = PROBE_TEXTS.flatMap((text, i) =>
      limit === 0 || [...text].length <= limit ? [i] : [],
    );
    const texts = taken.map((i) => PROBE_TEXTS[i] ?? "");
    const got = await untilAborted(
      embedTexts(session.backend, modelKey, texts, this.settings.timeoutMs, this.settings.signal),
      this.settings.signal,
    );
    const data = new Float32Array(PROBE_TEXTS.length * got.dim);
    taken.forEach((probe, row) => {
      data.set(got.data.subarray(row * got.dim, (row + 1) * got.dim), probe * got.dim);
    });
    return { vectors: { rows: PROBE_TEXTS.length, dim: got.dim, data }, taken: new Set(taken) };
  }
}

/** The servers of the pool after the probe: admitted, to retry later, and the refusals. */
export interface ProbedPool {
  readonly ready: ServerSession[];
  readonly waiting: ServerSession[];
  readonly refusals: string[];
}

/**
 * Probes the servers ready at the start: the first one listed alone (it may
 * store the reference), then the others side by side. A refused server is left
 * out with its line; one that could not embed the probes waits like a server
 * not reachable yet. None admitted and none waiting stops the run.
 */
export async function probeServers(
  guard: ProbeGuard,
  ready: readonly ServerSession[],
  waiting: readonly ServerSession[],
  progress: Progress,
  signal?: AbortSignal,
): Promise<ProbedPool> {
  // null: admitted; otherwise why not.
  const outcome = (s: ServerSession) =>
    guard.check(s).then(
      () => null,
      (err: unknown) => err,
    );
  const [first, ...rest] = ready;
  const outcomes = first ? [await outcome(first), ...(await Promise.all(rest.map(outcome)))] : [];
  // A stopped run is not a server that could not embed the probes.
  if (signal?.aborted) throw signal.reason;
  const probed: ProbedPool = { ready: [], waiting: [...waiting], refusals: [] };
  ready.forEach((session, i) => {
    const err = outcomes[i];
    if (err === null || err === undefined) probed.ready.push(session);
    else if (err instanceof ServerRefusedError) {
      RUN_METRICS.probeFailures.inc({ server: session.target, outcome: "refused" });
      probed.refusals.push(err.message);
      progress.note(err.message);
    } else {
      const why = err instanceof Error ? err.message : String(err);
      RUN_METRICS.probeFailures.inc({ server: session.target, outcome: "retry" });
      progress.note(
        `server ${session.target} could not embed the probes (${why}); trying it again later`,
      );
      probed.waiting.push(session);
    }
  });
  if (probed.ready.length === 0 && probed.waiting.length === 0) {
    throw new ServerError(`no server is left to embed with: ${probed.refusals.join("; ")}`);
  }
  return probed;
}

/**
 * The servers that may embed the pending batches: a guard that holds every
 * server to the models' probe vectors (stored by the first server of a model),
 * and the servers of the pool that passed it.
 */
export async function probePool(
  pool: Pick<ProbedPool, "ready" | "waiting">,
  aliases: readonly string[],
  ledger: Ledger,
  settings: Omit<ProbeSettings, "aliases">,
  progress: Progress,
): Promise<ProbedPool & { guard: ProbeGuard }> {
  const guard = new ProbeGuard(ledger, { ...settings, aliases: [...new Set(aliases)] }, progress);
  const probed = await probeServers(guard, pool.ready, pool.waiting, progress, settings.signal);
  return { ...probed, guard };
}
