import assert from "node:assert/strict";
import { createServer } from "node:net";
import { test } from "node:test";
import { GrpcBackend } from "../src/backend/grpc/backend.js";
import { ServerError } from "../src/errors.js";

/** A port that was free a moment ago: nothing answers there. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok(address && typeof address === "object");
  return address.port;
}

test("a server gone before the token count is named in words, not an internal error", async () => {
  const target = `127.0.0.1:${await freePort()}`;
  const backend = new GrpcBackend(target, { tls: null, authToken: "", maxMessageBytes: 1 << 24 });
  try {
    await assert.rejects(
      backend.tokenCounter().countTokens("k", ["a text"], false, 2000),
      (err: unknown) =>
        err instanceof ServerError &&
        new RegExp(`^server ${target}: unreachable during counting tokens`).test(err.message),
    );
  } finally {
    backend.close();
  }
});
