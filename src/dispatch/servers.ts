import { status } from "@grpc/grpc-js";
import type { RunModel } from "../config.js";
import { ServerError } from "../errors.js";
import type { InfoResponse, LoadModelRequest, ModelInfo } from "../gen/embedmulti/v1/inference.js";
import { identityDifferences, identityOf } from "../model/identity.js";
import { abortableSleep } from "./abort.js";
import {
  type ConnectionOptions,
  type HealthReport,
  RpcError,
  type ServerConnection,
} from "./client.js";

/** Loading a model can mean reading gigabytes from disk or the hub. */
const LOAD_MODEL_TIMEOUT_MS = 15 * 60 * 1000;
const HEALTH_POLL_MS = 250;

/** What a server said about itself and about each model of the run. */
export interface ServerSession {
  readonly target: string;
  readonly connection: ServerConnection;
  readonly info: InfoResponse;
  /** Alias → the model as this server loaded it. */
  readonly models: Map<string, ModelInfo>;
}

export function loadRequest(model: RunModel, device: string): LoadModelRequest {
  return {
    modelId: model.modelId,
    revision: model.revision,
    device,
    dtype: model.dtype,
    maxLength: model.maxLength,
    prefix: model.prefix,
    normalize: model.normalize,
    truncateDim: model.truncateDim,
  };
}

/** A server that did not answer (as opposed to one that answered no). */
export class ServerUnreachableError extends ServerError {}

/** Waits until the server reports SERVING, or throws after timeoutMs. */
export async function waitHealthy(
  connection: ServerConnection,
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
  connection: ServerConnection,
  models: readonly RunModel[],
  device: string,
  healthTimeoutMs: number,
  signal?: AbortSignal,
): Promise<ServerSession> {
  await waitHealthy(connection, healthTimeoutMs, signal);
  const info = await connection.info(10_000, signal).catch((err) => {
    if (signal?.aborted) throw err;
    throw explain(connection.target, "Info", err);
  });
  const loaded = new Map<string, ModelInfo>();
  for (const model of models) {
    const modelInfo = await connection
      .loadModel(loadRequest(model, device), LOAD_MODEL_TIMEOUT_MS, signal)
      .catch((err) => {
        if (signal?.aborted) throw err;
        throw explain(connection.target, `loading model "${model.alias}" (${model.modelId})`, err);
      });
    checkTruncation(connection.target, model, modelInfo);
    loaded.set(model.alias, modelInfo);
  }
  return { target: connection.target, connection, info, models: loaded };
}

/**
 * A server that predates truncate_dim ignores the field (proto3) and returns
 * whole vectors: refuse it rather than store vectors of another size.
 */
export function checkTruncation(target: string, model: RunModel, info: ModelInfo): void {
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

/** A gRPC failure at start-up, in words a user can act on. */
export function explain(target: string, what: string, err: unknown): ServerError {
  const rpc = RpcError.from(target, err);
  switch (rpc.code) {
    case status.NOT_FOUND:
      return new ServerError(`server ${target}: ${what}: not found (${rpc.details})`);
    case status.UNAUTHENTICATED:
      return new ServerError(
        `server ${target}: UNAUTHENTICATED: ${rpc.details} (set EMBED_AUTH_TOKEN to the server's token)`,
      );
    case status.UNAVAILABLE:
      return new ServerError(`server ${target}: unreachable during ${what} (${rpc.details})`);
    default:
      return new ServerError(
        `server ${target}: ${what} failed: ${status[rpc.code]}: ${rpc.details}`,
      );
  }
}

/** grpc-js's connection failures end in an empty "Resolution note" and carry a timestamp. */
function tidy(detail: string): string {
  return detail.replace(/\s*Resolution note:\s*$/, "").replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)/, "");
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export type { ConnectionOptions };
