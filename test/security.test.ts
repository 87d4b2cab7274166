import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { cliArgs } from "./cli-args.js";
import {
  corpusSlice,
  errorLines,
  type RunningServer,
  runCli,
  startServer,
  tempDir,
  testEnv,
  writeLines,
} from "./helpers.js";

const TOKEN = "s3cret-token-for-tests";
let dir: string;
let server: RunningServer;
let input: string;
let caFile: string;

before(async () => {
  dir = tempDir("security");
  caFile = join(dir, "server.crt");
  selfSignedCert(dir, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost");
  server = await startServer(
    ["--threads", "2", "--tls-cert", caFile, "--tls-key", join(dir, "server.key")],
    testEnv({ EMBED_AUTH_TOKEN: TOKEN }),
  );
  input = writeLines(join(dir, "in.jsonl"), corpusSlice(6, 50));
});

after(async () => {
  await server?.stop();
});

function cli(out: string, extra: string[], token: string | undefined) {
  const env = testEnv();
  delete env.EMBED_AUTH_TOKEN;
  if (token !== undefined) env.EMBED_AUTH_TOKEN = token;
  return runCli(
    [
      ...cliArgs(input, join(dir, out), "all-MiniLM-L6-v2"),
      "--servers",
      server.target,
      "--server_timeout",
      "3",
      ...extra,
    ],
    env,
  );
}

function oneError(stderr: string): string {
  const errors = errorLines(stderr).filter((l) => l.includes("error:"));
  assert.equal(errors.length, 1, stderr);
  assert.ok(!/\n\s+at /.test(stderr), "no stack trace");
  return errors[0] ?? "";
}

test("TLS with the right token embeds", async () => {
  const result = await cli("ok", ["--tls_ca", caFile], TOKEN);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /all-MiniLM-L6-v2\s+6\s+6/);
});

test("a wrong token is a one-line UNAUTHENTICATED error", async () => {
  const result = await cli("wrong", ["--tls_ca", caFile], "not-the-token");
  assert.notEqual(result.code, 0);
  assert.match(oneError(result.stderr), /UNAUTHENTICATED.*EMBED_AUTH_TOKEN/);
});

test("a missing token is a one-line UNAUTHENTICATED error", async () => {
  const result = await cli("missing", ["--tls_ca", caFile], undefined);
  assert.notEqual(result.code, 0);
  assert.match(oneError(result.stderr), /UNAUTHENTICATED/);
});

test("plaintext to a TLS server fails clearly", async () => {
  const result = await cli("plain", [], TOKEN);
  assert.notEqual(result.code, 0);
  const line = oneError(result.stderr);
  assert.match(line, new RegExp(`server ${server.target.replace(/\./g, "\\.")} is unreachable`));
  assert.match(line, /if the server uses TLS, add --tls or --tls_ca/);
});

test("TLS against a certificate from another CA fails clearly", async () => {
  const otherDir = tempDir("security-other");
  const otherCa = selfSignedCert(otherDir, "other");
  const result = await cli("other-ca", ["--tls_ca", otherCa], TOKEN);
  assert.notEqual(result.code, 0);
  assert.match(oneError(result.stderr), /unreachable/);
});

/** A self-signed certificate and key made with the openssl command: DIR/NAME.crt, DIR/NAME.key. */
function selfSignedCert(dir: string, name: string, subjectAltName?: string): string {
  const cert = join(dir, `${name}.crt`);
  const names = subjectAltName ? ["-addext", subjectAltName] : [];
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", `/CN=${name}`].concat(
      names,
      ["-keyout", join(dir, `${name}.key`), "-out", cert],
    ),
    { stdio: "ignore" },
  );
  return cert;
}
