import type { PlanLimits } from "./planner.js";

/** Room for the protobuf framing around a batch's embeddings. */
const MESSAGE_HEADROOM = 0.9;
const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** What the user asked for; 0 = no token budget. */
export interface RequestedLimits {
  readonly batchSize: number;
  readonly maxBatchTokens: number;
}

/** What a server accepts; 0 = no limit of its own. */
export interface ServerLimits {
  readonly maxBatchSize: number;
  readonly maxBatchTokens: number;
  readonly maxMessageBytes: number;
}

/** A model's batch limits, and the message cap they were cut for. */
export interface ModelLimits extends PlanLimits {
  readonly maxMessageBytes: number;
}

/**
 * The batch limits of one model: the smallest of what the user asked, what
 * the server takes, and what fits in one answer message at `dim` float32s a row.
 */
export function batchLimits(
  requested: RequestedLimits,
  server: ServerLimits | undefined,
  dim: number,
): ModelLimits {
  const maxMessage = Number(server?.maxMessageBytes || DEFAULT_MAX_MESSAGE_BYTES);
  const rowsPerMessage = Math.max(1, Math.floor((maxMessage * MESSAGE_HEADROOM) / (dim * 4)));
  const batchSize = Math.min(
    requested.batchSize,
    server?.maxBatchSize || requested.batchSize,
    rowsPerMessage,
  );
  const serverTokens = server?.maxBatchTokens || 0;
  const maxBatchTokens =
    requested.maxBatchTokens > 0 && serverTokens > 0
      ? Math.min(requested.maxBatchTokens, serverTokens)
      : requested.maxBatchTokens || serverTokens;
  // A batch sent as texts (a resumed run) must fit the server's message cap too.
  const maxBatchBytes = Math.floor(maxMessage * MESSAGE_HEADROOM);
  return { batchSize, maxBatchTokens, maxBatchBytes, maxMessageBytes: maxMessage };
}
