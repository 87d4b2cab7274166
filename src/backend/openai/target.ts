import { ConfigError } from "../../errors.js";

/** The prefix that marks a --servers entry as an OpenAI-compatible HTTP server. */
export const OPENAI_SCHEME = "openai:";

/** One OpenAI-compatible server: the base URL its `/embeddings` route hangs under. */
export interface OpenAITarget {
  /** e.g. `http://127.0.0.1:7997/v1`, no trailing slash, never with credentials. */
  readonly baseUrl: string;
}

export function isOpenAITarget(spec: string): boolean {
  return spec.startsWith(OPENAI_SCHEME);
}

/**
 * `openai:http://host:port/v1` → its base URL. A URL carrying a user name or
 * password is refused (the key belongs in the environment, where it is never
 * written to the metadata or a log), and the message shows the URL without it.
 */
export function parseOpenAITarget(spec: string): OpenAITarget {
  const raw = spec.slice(OPENAI_SCHEME.length);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(
      `--servers ${shownSpec(spec)}: not a URL; write openai:http://host:port/v1 (or https://)`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError(
      `--servers ${shownSpec(spec)}: the URL must start with http:// or https://, not ${url.protocol}//`,
    );
  }
  if (url.username || url.password) {
    url.username = "";
    url.password = "";
    throw new ConfigError(
      `--servers openai:${url.href}: the URL carries credentials; put the key in OPENAI_API_KEY (or EMBED_AUTH_TOKEN) instead, it is never shown`,
    );
  }
  if (url.search || url.hash) {
    throw new ConfigError(
      `--servers openai:${url.origin}${url.pathname}: the URL must not carry a query or a fragment`,
    );
  }
  return { baseUrl: `${url.origin}${url.pathname.replace(/\/+$/, "")}` };
}

/** A spec as shown in a message: anything between `//` and `@` (a password) is hidden. */
function shownSpec(spec: string): string {
  return spec.replace(/\/\/[^/@]*@/, "//…@").slice(0, 200);
}
