import { openAIOptions } from "../backend/openai/backend.js";
import { BACKEND_KINDS, type BackendOptions, createBackends } from "../backend/select.js";
import type { Resolve } from "../backend/targets.js";
import type { Backend } from "../backend/types.js";
import type { RunConfig } from "../config.js";
import {
  notYetSession,
  openSession,
  type ServerSession,
  ServerUnreachableError,
} from "../dispatch/servers.js";
import type { Progress } from "../progress.js";
import { EmbeddedServer } from "../server/embedded.js";

/** Once one server is ready, how long the others get before the run starts without them. */
export const STRAGGLER_GRACE_MS = 5000;

/** Servers ready to work, servers not reachable yet that may join later, and the embedded one. */
export interface ServerPool {
  readonly ready: ServerSession[];
  readonly waiting: ServerSession[];
  /** The embedded servers (one per local device); empty with --servers. */
  readonly embedded: readonly EmbeddedServer[];
}

/** Starts the embedded server when no --servers are given, then connects to every server. */
export async function startPool(
  config: RunConfig,
  progress: Progress,
  signal: AbortSignal,
  onEmbeddedServer?: (servers: readonly EmbeddedServer[]) => void,
  resolve?: Resolve,
): Promise<ServerPool> {
  const embedded: EmbeddedServer[] = [];
  if (config.servers.length === 0) {
    const devices = config.localDevices;
    progress.note(
      devices.length > 1
        ? `starting ${devices.length} embedded inference servers (${devices.join(", ")}), one per device`
        : "starting the embedded inference server",
    );
    // Side by side: each pays its own torch import and model load.
    const started = await Promise.allSettled(
      devices.map((d) => EmbeddedServer.start(config.embedded, d, signal)),
    );
    for (const s of started) if (s.status === "fulfilled") embedded.push(s.value);
    onEmbeddedServer?.(embedded);
    const failed = started.find((s) => s.status === "rejected");
    if (failed) {
      await stopPool({ ready: [], waiting: [], embedded }, onEmbeddedServer);
      throw failed.reason;
    }
  }
  try {
    const targets = embedded.length > 0 ? embedded.map((e) => e.target) : config.servers;
    const backends = await createBackends(
      targets,
      connectionOptions(config),
      BACKEND_KINDS,
      resolve,
    );
    const open = (b: Backend) =>
      openSession(b, config.models, config.device, config.serverTimeoutMs, signal);
    // A session with no models yet: the dispatcher reopens it when it comes up.
    const { ready, waiting } = await gather(backends, open, notYetSession, STRAGGLER_GRACE_MS);
    for (const w of waiting) {
      progress.note(
        `server ${w.target} is not reachable yet; going on without it until it comes up`,
      );
    }
    return { ready, waiting, embedded };
  } catch (err) {
    await stopPool({ ready: [], waiting: [], embedded }, onEmbeddedServer);
    throw err;
  }
}

/** How the run connects to its servers (also those that join later). */
export function connectionOptions(config: RunConfig): BackendOptions {
  return {
    tls: config.tls,
    authToken: config.authToken,
    maxMessageBytes: 256 * 1024 * 1024,
    openai: config.openai ? openAIOptions(config.openai, config.embedded.modelDir) : undefined,
  };
}

/** Closes every connection and stops the embedded server. */
export async function stopPool(
  pool: ServerPool,
  onEmbeddedServer?: (servers: readonly EmbeddedServer[]) => void,
): Promise<void> {
  for (const session of [...pool.ready, ...pool.waiting]) session.backend.close();
  if (pool.embedded.length > 0) {
    await Promise.all(pool.embedded.map((e) => e.stop()));
    onEmbeddedServer?.([]);
  }
}

type Opened<S> = { ok: true; session: S } | { ok: false; error: unknown };

/** What gather() needs of a connection. */
export interface Connectable {
  readonly target: string;
  close(): void;
}

/**
 * Opens every server. Returns once all are open, or once one is and the
 * others had `graceMs` more: a server not reachable by then joins when it
 * comes up. A server that answers no (unknown model, bad token) stops the
 * run, as does having none ready.
 */
export async function gather<C extends Connectable, S>(
  connections: readonly C[],
  open: (connection: C) => Promise<S>,
  notYet: (connection: C) => S,
  graceMs: number,
): Promise<{ ready: S[]; waiting: S[] }> {
  const outcomes: (Opened<S> | undefined)[] = connections.map(() => undefined);
  let anyReady: () => void = () => {};
  const firstReady = new Promise<void>((resolve) => {
    anyReady = resolve;
  });
  const all = Promise.all(
    connections.map((c, i) =>
      open(c).then(
        (session) => {
          outcomes[i] = { ok: true, session };
          anyReady();
        },
        (error: unknown) => {
          outcomes[i] = { ok: false, error };
        },
      ),
    ),
  );
  // The grace timer is cleared once the race is over, so it never keeps a finished
  // run alive; it is not unref'd, since a run waiting on it only for a straggler
  // (no socket of its own yet) must still wait.
  let timer: NodeJS.Timeout | undefined;
  let raced = false;
  const grace = firstReady.then(
    () =>
      new Promise<void>((resolve) => {
        if (!raced) timer = setTimeout(resolve, graceMs);
      }),
  );
  try {
    await Promise.race([all, grace]);
  } finally {
    raced = true;
    clearTimeout(timer);
  }

  const ready: S[] = [];
  const waiting: S[] = [];
  let refusal: unknown = null;
  let unreachable: unknown = null;
  outcomes.forEach((outcome, i) => {
    const connection = connections[i];
    if (!connection) return;
    if (outcome?.ok) ready.push(outcome.session);
    else if (outcome && !(outcome.error instanceof ServerUnreachableError))
      refusal ??= outcome.error;
    else {
      if (outcome) unreachable ??= outcome.error;
      waiting.push(notYet(connection));
    }
  });
  if (refusal || ready.length === 0) {
    for (const c of connections) c.close();
    throw refusal ?? unreachable;
  }
  return { ready, waiting };
}
