import type { Backend, HealthReport, LoadedModel, ServerDescription } from "../backend/types.js";
import { checkQuantized } from "../checks/quantize.js";
import type { RunModel } from "../config.js";
import { ServerError } from "../errors.js";
import { identityDifferences, identityOf } from "../model/identity.js";
import { abortableSleep } from "./abort.js";

/** Loading a model can mean reading gigabytes from disk or the hub. */
const LOAD_MODEL_TIMEOUT_MS = 15 * 60 * 1000;
const HEALTH_POLL_MS = 250;

/** What a server said about itself and about each model of the run. */
export interface ServerSession {
  readonly target: string;
  readonly backend: Backend;
  /** Null until the server answered (a server not reachable yet). */
  readonly info: ServerDescription | null;
  /** Alias → the model as this server loaded it. */
  readonly models: ReadonlyMap<string, LoadedModel>;
}

/** A server that did not answer (as opposed to one that answered no). */
export class ServerUnreachableError extends ServerError {}

/** Waits until the server reports SERVING, or throws after timeoutMs. */
export async function waitHealthy(
  connection: Pick<Backend, "target" | "usesTls" | "checkHealth">,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last: HealthReport = { state: "unknown", detail: "no answer" };
  while (Date.now() < until) {
    last = await connection.checkHealth(Math.min(2000, Math.max(100, until - Date.now())), signal);
    if (last.state === "serving") return;
    await abortableSleep(HEALTH_POLL_MS, signal);
  }
  const hint = connection.usesTls
    ? "; with TLS, check --tls_ca and the names on the server's certificate"
    : "; if the server uses TLS, add --tls or --tls_ca";
  const why =
    last.state === "not-serving"
      ? "not ready (health NOT_SERVING)"
      : `unreachable (${tidy(last.detail)})`;
  throw new ServerUnreachableError(
    `server ${connection.target} is ${why} after ${Math.round(timeoutMs / 1000)} s (--server_timeout)${last.state === "not-serving" ? "" : hint}`,
  );
}

/** Health, Info and LoadModel for every model: a server fit to take this run's batches. */
export async function openSession(
  backend: Backend,
  models: readonly RunModel[],
  device: string,
  healthTimeoutMs: number,
  signal?: AbortSignal,
): Promise<ServerSession> {
  await waitHealthy(backend, healthTimeoutMs, signal);
  const info = await backend.describe(10_000, signal);
  const loaded = new Map<string, LoadedModel>();
  for (const model of models) {
    const modelInfo = await backend.loadModel(model, device, LOAD_MODEL_TIMEOUT_MS, signal);
    checkTruncation(backend.target, model, modelInfo);
    checkQuantized(backend.target, model, modelInfo);
    loaded.set(model.alias, modelInfo);
  }
  return { target: backend.target, backend, info, models: loaded };
}

/** A server not reachable yet: no description, no models; the dispatcher reopens it. */
export function notYetSession(backend: Backend): ServerSession {
  return { target: backend.target, backend, info: null, models: new Map() };
}

/**
 * A server that predates truncate_dim ignores the field (proto3) and returns
 * whole vectors: refuse it rather than store vectors of another size.
 */
export function checkTruncation(target: string, model: RunModel, info: LoadedModel): void {
  const cut = model.truncateDim;
  if (info.truncateDim === cut && (cut === 0 || info.dim === cut)) return;
  throw new ServerError(
    `server ${target}: model "${model.alias}" was asked for truncate_dim ${cut} but reports truncate_dim ${info.truncateDim}, dim ${info.dim}; update the inference server`,
  );
}

/** Every server must compute the same numbers for a model: same dim, same weights. */
export function checkAgreement(
  sessions: readonly ServerSession[],
  models: readonly RunModel[],
): void {
  const [first, ...rest] = sessions;
  if (!first) return;
  for (const model of models) {
    const reference = first.models.get(model.alias);
    for (const other of rest) {
      const theirs = other.models.get(model.alias);
      if (!reference || !theirs) continue;
      const differences = identityDifferences(identityOf(reference), identityOf(theirs));
      if (differences.length > 0) {
        throw new ServerError(
          `servers ${first.target} and ${other.target} disagree on model "${model.alias}" (${differences.join(", ")}); give servers that hold the same model`,
        );
      }
    }
  }
}

/** grpc-js's connection failures end in an empty "Resolution note" and carry a timestamp. */
function tidy(detail: string): string {
  return detail.replace(/\s*Resolution note:\s*$/, "").replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)/, "");
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
