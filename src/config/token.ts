import { ConfigError } from "../errors.js";

/** Visible ASCII and spaces: what a gRPC metadata (HTTP/2 header) value may hold. */
const HEADER_SAFE = /^[\x20-\x7e]*$/;

/**
 * The bearer token from EMBED_AUTH_TOKEN. `$(cat token.txt)` and secret
 * mounts often bring a trailing newline, so whitespace at both ends goes.
 * A token still holding characters a header cannot carry is refused here,
 * with a message that never shows it: the gRPC library's own error would
 * print the whole header, secret included.
 */
export function readAuthToken(env: NodeJS.ProcessEnv): string {
  const token = (env.EMBED_AUTH_TOKEN ?? "").trim();
  if (!HEADER_SAFE.test(token)) {
    throw new ConfigError(
      "EMBED_AUTH_TOKEN holds characters a gRPC header cannot carry (a line break or a non-ASCII character inside it); the token is not shown",
    );
  }
  return token;
}
