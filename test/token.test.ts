import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { readAuthToken } from "../src/config/token.js";
import { cliArgs } from "./cli-args.js";
import {
  errorLines,
  inputDir,
  paragraphLines,
  runCli,
  serverForTests,
  testEnv,
} from "./helpers.js";

const TOKEN = "tok-Zq81-secret";
const server = serverForTests(["--engine", "debug"], testEnv({ EMBED_AUTH_TOKEN: TOKEN }));

async function runWithToken(token: string) {
  const { input, out } = inputDir(
    "token",
    paragraphLines(20, (i) => ["a", `text ${i}`]),
  );
  const result = await runCli(
    cliArgs(input, out, "all-MiniLM-L6-v2", { servers: server.target }),
    testEnv({ EMBED_AUTH_TOKEN: token }),
  );
  return { result, out };
}

test("a token with a trailing newline (as $(cat token.txt) gives) works", async () => {
  for (const token of [`${TOKEN}\n`, `  ${TOKEN}\r\n`]) {
    const { result, out } = await runWithToken(token);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(existsSync(join(out, "all-MiniLM-L6-v2.metadata.json")));
    assert.ok(!result.stderr.includes(TOKEN) && !result.stdout.includes(TOKEN));
  }
});

test("a token a header cannot carry is refused without being printed", async () => {
  const bad = "tok-part-one\ntok-part-two";
  const { result } = await runWithToken(bad);
  assert.equal(result.code, 2, result.stderr);
  const errors = errorLines(result.stderr);
  assert.equal(errors.length, 1, result.stderr);
  assert.match(errors[0] ?? "", /EMBED_AUTH_TOKEN holds characters a gRPC header cannot carry/);
  assert.ok(!result.stderr.includes("tok-part"), "the token is never printed");
  assert.doesNotMatch(result.stderr, /this is a bug/);
});

test("a wrong token is refused by the server without being printed", async () => {
  const { result } = await runWithToken("tok-wrong-777");
  assert.notEqual(result.code, 0);
  assert.match(result.stderr, /UNAUTHENTICATED/);
  assert.ok(!result.stderr.includes("tok-wrong-777"));
  assert.ok(!result.stderr.includes(TOKEN));
});

test("readAuthToken trims both ends and refuses inner control or non-ASCII characters", () => {
  assert.equal(readAuthToken({ EMBED_AUTH_TOKEN: "\t abc.def-123 \n" }), "abc.def-123");
  assert.equal(readAuthToken({}), "");
  for (const bad of ["a\nb", "a\u0000b", "tökén"]) {
    assert.throws(
      () => readAuthToken({ EMBED_AUTH_TOKEN: bad }),
      (err: Error) => !err.message.includes(bad) && /cannot carry/.test(err.message),
    );
  }
});
