import { ConfigError } from "../../errors.js";

/** Visible ASCII and spaces: what an HTTP header value may hold. */
const HEADER_SAFE = /^[\x20-\x7e]*$/;

/**
 * The bearer key for OpenAI-compatible servers: OPENAI_API_KEY, else
 * EMBED_AUTH_TOKEN ("" = send none). Never a flag, so it stays out of shell
 * history and process lists. Whitespace at both ends goes (secret mounts end
 * in a newline); what a header cannot carry is refused without showing it.
 */
export function readApiKey(env: NodeJS.ProcessEnv): { key: string; from: string } {
  for (const name of ["OPENAI_API_KEY", "EMBED_AUTH_TOKEN"]) {
    const key = (env[name] ?? "").trim();
    if (!key) continue;
    if (!HEADER_SAFE.test(key)) {
      throw new ConfigError(
        `${name} holds characters an HTTP header cannot carry (a line break or a non-ASCII character inside it); the key is not shown`,
      );
    }
    return { key, from: name };
  }
  return { key: "", from: "" };
}
