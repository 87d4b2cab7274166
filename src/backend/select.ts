import { GrpcBackend } from "./grpc/backend.js";
import { DEFAULT_OPENAI_OPTIONS, OpenAIBackend, type OpenAIOptions } from "./openai/backend.js";
import { isOpenAITarget, parseOpenAITarget } from "./openai/target.js";
import { type Resolve, resolveTargets } from "./targets.js";
import type { Backend, ConnectionOptions } from "./types.js";

/**
 * What the backends of a run share: the connection (every kind), and each
 * kind's own settings. Here, where the kinds are put together, so that the
 * interface (types.ts) knows no kind.
 */
export interface BackendOptions extends ConnectionOptions {
  /** OpenAI-compatible servers only: the key, the request caps, names and tokenizers. */
  readonly openai?: OpenAIOptions | undefined;
}

/**
 * The kinds of server a `--servers` entry can name, tried in order: the first
 * whose `claims` accepts the entry makes its backends. Ours (gRPC, `host:port`
 * or `dns:///name:port`) takes whatever no other kind claims. A new kind is
 * one entry here and a folder of its own.
 */
export interface BackendKind {
  readonly name: string;
  claims(target: string): boolean;
  /** One backend per server the entry names (a DNS name may name several). */
  create(target: string, options: BackendOptions, resolve?: Resolve): Promise<Backend[]>;
}

const GRPC: BackendKind = {
  name: "grpc",
  claims: () => true,
  create: async (target, options, resolve) =>
    (await resolveTargets([target], resolve)).map(
      (t) => new GrpcBackend(t.address, options, t.authority),
    ),
};

/** Anyone's OpenAI-compatible `/v1/embeddings`: `openai:http(s)://host:port/v1`. */
const OPENAI: BackendKind = {
  name: "openai",
  claims: isOpenAITarget,
  create: async (target, options) => [
    new OpenAIBackend(parseOpenAITarget(target).baseUrl, options.openai ?? DEFAULT_OPENAI_OPTIONS),
  ],
};

export const BACKEND_KINDS: readonly BackendKind[] = [OPENAI, GRPC];

/** The backends of every `--servers` entry (or the embedded server's target), in order. */
export async function createBackends(
  targets: readonly string[],
  options: BackendOptions,
  kinds: readonly BackendKind[] = BACKEND_KINDS,
  resolve?: Resolve,
): Promise<Backend[]> {
  const out: Backend[] = [];
  try {
    for (const target of targets) {
      const kind = kinds.find((k) => k.claims(target)) ?? GRPC;
      out.push(...(await kind.create(target, options, resolve)));
    }
  } catch (err) {
    for (const b of out) b.close();
    throw err;
  }
  return out;
}

/** The backend of one address of a `dns:///` name that joined during the run. */
export function backendForAddress(
  address: string,
  authority: string,
  options: BackendOptions,
): Backend {
  return new GrpcBackend(address, options, authority);
}
