import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { BadRowError, embedBatch, finishRows, requestRanges } from "../src/backend/openai/batch.js";
import { OpenAIClient } from "../src/backend/openai/client.js";
import { discoverModel } from "../src/backend/openai/discover.js";
import { HttpEmbedError, retryAfterMs } from "../src/backend/openai/fault.js";
import { readApiKey } from "../src/backend/openai/key.js";
import { parseOpenAITarget } from "../src/backend/openai/target.js";
import { decodeBase64Floats, encodeBase64Floats, parseAnswer } from "../src/backend/openai/wire.js";
import { ConfigError } from "../src/errors.js";
import { fakeVector, startFakeOpenAI } from "./openai-fake.js";

const settings = {
  model: "fake/model",
  encoding: "base64" as const,
  serverDimensions: 0,
  localDimensions: 0,
  normalize: false,
  maxInputs: 2048,
  maxTokens: 300_000,
};

function client(url: string, apiKey = ""): OpenAIClient {
  return new OpenAIClient({ baseUrl: url, apiKey, timeoutMs: 5000 });
}

describe("openai wire format", () => {
  test("base64 float32 little-endian round-trips, from an unaligned buffer too", () => {
    const row = new Float32Array([1.5, -2.25, 3.0e-7, 0]);
    const text = encodeBase64Floats(row);
    assert.equal(Buffer.from(text, "base64").readFloatLE(4), -2.25);
    assert.deepEqual(decodeBase64Floats(text), row);
    assert.throws(
      () => decodeBase64Floats(Buffer.from([1, 2, 3]).toString("base64")),
      /whole float32/,
    );
  });

  test("answers are matched by index, never by position", () => {
    const answer = parseAnswer(
      {
        model: "m",
        data: [
          { index: 1, embedding: [3, 4] },
          { index: 0, embedding: encodeBase64Floats(new Float32Array([1, 2])) },
        ],
      },
      2,
    );
    assert.deepEqual([...answer.vectors], [1, 2, 3, 4]);
    assert.equal(answer.dim, 2);
    assert.throws(
      () =>
        parseAnswer(
          {
            data: [
              { index: 0, embedding: [1] },
              { index: 0, embedding: [2] },
            ],
          },
          2,
        ),
      /index 0 comes twice/,
    );
    assert.throws(() => parseAnswer({ data: [{ index: 5, embedding: [1] }] }, 1), /index 5/);
    assert.throws(
      () =>
        parseAnswer(
          {
            data: [
              { index: 0, embedding: [1] },
              { index: 1, embedding: [1, 2] },
            ],
          },
          2,
        ),
      /2 dimensions, others 1/,
    );
    assert.throws(() => parseAnswer({ data: [] }, 1), /0 embeddings for 1 texts/);
  });

  test("request ranges keep to both caps; a text over the token cap goes alone", () => {
    assert.deepEqual(requestRanges([1, 1, 1, 1, 1], 5, 2, 100), [
      [0, 2],
      [2, 4],
      [4, 5],
    ]);
    assert.deepEqual(requestRanges([10, 10, 50, 10], 4, 10, 25), [
      [0, 2],
      [2, 3],
      [3, 4],
    ]);
  });

  test("Matryoshka cut then renormalize, as sentence-transformers does", () => {
    const out = finishRows(new Float32Array([3, 4, 12, 0, 0, 0]), 3, 2, true);
    assert.equal(out.dim, 2);
    assert.deepEqual(
      [...out.vectors].map((v) => Math.round(v * 1000) / 1000),
      [0.6, 0.8, 0, 0],
    );
    const plain = finishRows(new Float32Array([3, 4, 12]), 3, 2, false);
    assert.deepEqual([...plain.vectors], [3, 4]);
  });

  test("Retry-After in seconds or as a date, capped", () => {
    assert.equal(retryAfterMs("2"), 2000);
    assert.equal(retryAfterMs(new Date(10_000).toUTCString(), 7_000), 3000);
    assert.equal(retryAfterMs("99999"), 60_000);
    assert.equal(retryAfterMs("soon"), 0);
    assert.equal(retryAfterMs(null), 0);
  });
});

describe("openai targets and keys", () => {
  test("openai:URL gives its base URL; credentials in it are refused and not shown", () => {
    assert.equal(
      parseOpenAITarget("openai:http://127.0.0.1:7997/v1/").baseUrl,
      "http://127.0.0.1:7997/v1",
    );
    assert.equal(
      parseOpenAITarget("openai:https://api.example.com/v1").baseUrl,
      "https://api.example.com/v1",
    );
    assert.throws(
      () => parseOpenAITarget("openai:https://bob:sekrit@api.example.com/v1"),
      (err: Error) =>
        err instanceof ConfigError &&
        /OPENAI_API_KEY/.test(err.message) &&
        !err.message.includes("sekrit"),
    );
    assert.throws(() => parseOpenAITarget("openai:ftp://x/v1"), /http:\/\/ or https:\/\//);
    assert.throws(() => parseOpenAITarget("openai:not a url"), /not a URL/);
  });

  test("the key comes from OPENAI_API_KEY, else EMBED_AUTH_TOKEN, trimmed", () => {
    assert.deepEqual(readApiKey({ OPENAI_API_KEY: " sk-1\n", EMBED_AUTH_TOKEN: "t" }), {
      key: "sk-1",
      from: "OPENAI_API_KEY",
    });
    assert.deepEqual(readApiKey({ EMBED_AUTH_TOKEN: "t" }), { key: "t", from: "EMBED_AUTH_TOKEN" });
    assert.deepEqual(readApiKey({}), { key: "", from: "" });
    assert.throws(
      () => readApiKey({ OPENAI_API_KEY: "sk-ä-secret" }),
      (err: Error) => /cannot carry/.test(err.message) && !err.message.includes("secret"),
    );
  });
});

describe("openai client against the fake server", () => {
  const closers: (() => Promise<void>)[] = [];
  after(async () => {
    for (const close of closers) await close();
  });

  test("vectors come back right, in row order, base64 asked and the key sent as a bearer", async () => {
    const fake = await startFakeOpenAI();
    closers.push(fake.close);
    const texts = ["alpha", "beta", "gamma"];
    const got = await embedBatch(client(fake.url, "sk-test"), texts, [1, 1, 1], settings);
    assert.equal(got.dim, 8);
    texts.forEach((t, i) => {
      assert.deepEqual(got.vectors.subarray(i * 8, i * 8 + 8), fakeVector(t, 8));
    });
    const req = fake.seen.at(-1);
    assert.equal(req?.auth, "Bearer sk-test");
    assert.equal(req?.body.encoding_format, "base64");
    assert.deepEqual(req?.body.input, texts);
  });

  test("429 with Retry-After is the server's fault, with the wait it asked for", async () => {
    const fake = await startFakeOpenAI({
      rule: () => ({
        status: 429,
        body: '{"error":{"message":"slow down"}}',
        headers: { "retry-after": "3" },
      }),
    });
    closers.push(fake.close);
    const err = await embedBatch(client(fake.url), ["a"], [1], settings).catch((e) => e);
    assert.ok(err instanceof HttpEmbedError);
    assert.equal(err.fault, "server");
    assert.equal(err.retryAfterMs, 3000);
    assert.match(err.message, /HTTP 429: too many requests: slow down/);
  });

  test("401 is an auth fault naming the server and the refused key, never the key", async () => {
    const fake = await startFakeOpenAI({
      rule: () => ({ status: 401, body: '{"detail":"Unauthorized"}' }),
    });
    closers.push(fake.close);
    const err = await embedBatch(client(fake.url, "sk-do-not-print"), ["a"], [1], settings).catch(
      (e) => e,
    );
    assert.ok(err instanceof HttpEmbedError);
    assert.equal(err.fault, "auth");
    assert.ok(err.message.startsWith(fake.url));
    assert.match(err.message, /refused the key/);
    assert.ok(!err.message.includes("sk-do-not-print"));
  });

  test("a 400 for one row is split until that row stands alone", async () => {
    const fake = await startFakeOpenAI({
      rule: (req) =>
        req.body.input?.includes("poison")
          ? { status: 400, body: '{"error":{"message":"bad text"}}' }
          : null,
    });
    closers.push(fake.close);
    const texts = ["a", "b", "c", "d", "e", "poison", "g", "h"];
    const err = await embedBatch(
      client(fake.url),
      texts,
      texts.map(() => 1),
      settings,
    ).catch((e) => e);
    assert.ok(err instanceof BadRowError, String(err));
    assert.equal(err.row, 5);
    assert.match(err.message, /bad text/);
    // Halving: 8 → 4 → 2 → 1, and the good halves on the way: at most 2·log2(8)+1 requests.
    assert.ok(fake.seen.length <= 7, `${fake.seen.length} requests`);
  });

  test("a 400 that goes away when the batch is split gives every vector", async () => {
    const fake = await startFakeOpenAI({
      rule: (req) => ((req.body.input?.length ?? 0) > 2 ? { status: 400, body: "too big" } : null),
    });
    closers.push(fake.close);
    const texts = ["a", "b", "c", "d", "e"];
    const got = await embedBatch(
      client(fake.url),
      texts,
      texts.map(() => 1),
      settings,
    );
    assert.deepEqual(got.vectors.subarray(4 * 8), fakeVector("e", 8));
  });

  test("no server listening is the server's fault; the abort signal ends a request", async () => {
    const fake = await startFakeOpenAI();
    const url = fake.url;
    await fake.close();
    const err = await embedBatch(client(url), ["a"], [1], settings).catch((e) => e);
    assert.ok(err instanceof HttpEmbedError);
    assert.equal(err.fault, "server");
    assert.match(err.message, /cannot reach the server \(ECONNREFUSED\)/);
    const ctl = new AbortController();
    ctl.abort(new Error("stopped"));
    await assert.rejects(embedBatch(client(url), ["a"], [1], settings, ctl.signal), /stopped/);
  });

  test("discovery: a server without base64 is asked for floats; one model listed is used", async () => {
    const fake = await startFakeOpenAI({
      model: "served-name",
      rule: (req) =>
        req.body.encoding_format === "base64"
          ? { status: 400, body: '{"error":"encoding_format base64 not supported"}' }
          : null,
    });
    closers.push(fake.close);
    const served = await discoverModel(client(fake.url), "sentence-transformers/x", 0);
    assert.equal(served.name, "served-name");
    assert.equal(served.encoding, "float");
    assert.equal(served.dim, 8);
    assert.equal(served.normalized, true);
  });
});
