/**
 * Whose fault a failed request is, decided from the HTTP answer alone:
 *   server: the server cannot work now (429, 5xx but 500, no connection,
 *           timeout). Back off, send the batch elsewhere, count no attempt.
 *   batch:  the server refused this batch (400, 413, 422, 500, a malformed
 *           answer). Counted; a 400-class refusal is split to find the row.
 *   auth:   401/403. No other batch can do better: the run stops at once.
 */
export type Fault = "server" | "batch" | "auth";

export class HttpEmbedError extends Error {
  constructor(
    /** The server's base URL (never with credentials). */
    readonly url: string,
    readonly fault: Fault,
    /** The HTTP status, 0 when no answer came. */
    readonly status: number,
    readonly detail: string,
    /** How long the server asked to be left alone (Retry-After), 0 when it did not say. */
    readonly retryAfterMs = 0,
  ) {
    super(`${url}: ${status ? `HTTP ${status}: ` : ""}${detail}`);
    this.name = "HttpEmbedError";
  }

  /** A refusal that names the batch's content, so splitting the batch can find the row. */
  get rowsAtFault(): boolean {
    return (
      this.fault === "batch" && (this.status === 400 || this.status === 413 || this.status === 422)
    );
  }
}

/** The longest Retry-After obeyed: a server asking for an hour is treated as down. */
export const MAX_RETRY_AFTER_MS = 60_000;

/** Seconds or an HTTP date → milliseconds from `now`; 0 when absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number {
  if (!header) return 0;
  const text = header.trim();
  let ms: number;
  if (/^\d+(\.\d+)?$/.test(text)) ms = Number(text) * 1000;
  else {
    const at = Date.parse(text);
    if (Number.isNaN(at)) return 0;
    ms = at - now;
  }
  return Math.max(0, Math.min(MAX_RETRY_AFTER_MS, Math.round(ms)));
}

/** The error an HTTP answer other than 2xx stands for. */
export function classifyStatus(
  url: string,
  status: number,
  body: string,
  retryAfter: string | null,
  keySet: boolean,
): HttpEmbedError {
  const said = serverMessage(body);
  if (status === 401 || status === 403) {
    const detail = keySet
      ? "the server refused the key (OPENAI_API_KEY or EMBED_AUTH_TOKEN); set one it accepts"
      : "the server wants a key and none is set: put it in OPENAI_API_KEY (or EMBED_AUTH_TOKEN)";
    return new HttpEmbedError(url, "auth", status, said ? `${detail} (it said: ${said})` : detail);
  }
  if (status === 429) {
    return new HttpEmbedError(
      url,
      "server",
      status,
      `too many requests${said ? `: ${said}` : ""}`,
      retryAfterMs(retryAfter),
    );
  }
  if (status >= 500 && status !== 500) {
    return new HttpEmbedError(
      url,
      "server",
      status,
      said || "unavailable",
      retryAfterMs(retryAfter),
    );
  }
  if (status === 404 || status === 405) {
    // The route is not there (a wrong base URL, or a proxy that lost its backend).
    return new HttpEmbedError(
      url,
      "server",
      status,
      `no POST ${url}/embeddings route here${said ? ` (${said})` : ""}; is the base URL right (…/v1)?`,
    );
  }
  return new HttpEmbedError(url, "batch", status, said || `the server refused the batch`);
}

/** No answer at all: refused connection, reset, DNS, TLS, or our own timeout. */
export function classifyNetworkError(url: string, err: unknown, timeoutMs: number): HttpEmbedError {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === "TimeoutError") {
    return new HttpEmbedError(
      url,
      "server",
      0,
      `no answer within ${Math.round(timeoutMs / 1000)} s (--batch_timeout)`,
    );
  }
  const cause = e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
  return new HttpEmbedError(url, "server", 0, `cannot reach the server (${cause})`);
}

/**
 * The server's own words, one line and short: OpenAI's {"error":{"message"}},
 * FastAPI's {"detail"}, TEI's {"error"}, or the first line of plain text.
 */
export function serverMessage(body: string): string {
  let text = body.trim();
  try {
    const json = JSON.parse(text) as Record<string, unknown>;
    const err = json.error;
    if (typeof err === "string") text = err;
    else if (err && typeof (err as { message?: unknown }).message === "string") {
      text = (err as { message: string }).message;
    } else if (typeof json.detail === "string") text = json.detail;
    else if (Array.isArray(json.detail)) text = JSON.stringify(json.detail[0] ?? "");
    else if (typeof json.message === "string") text = json.message;
  } catch {
    // not JSON: the text itself
  }
  const line = (text.split("\n")[0] ?? "").trim();
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}
