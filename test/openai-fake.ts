import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { encodeBase64Floats } from "../src/backend/openai/wire.js";

/** One request the fake saw. */
export interface SeenRequest {
  readonly path: string;
  readonly auth: string;
  readonly body: {
    input?: string[];
    model?: string;
    encoding_format?: string;
    dimensions?: number;
  };
}

/** What the fake answers: a status with headers and body, or null for a normal answer. */
export type FakeRule = (
  req: SeenRequest,
  n: number,
) => { status: number; body: string; headers?: Record<string, string> } | null;

/**
 * A test-only OpenAI-compatible server on 127.0.0.1: deterministic vectors
 * (a hash of the text, unit length), answers in shuffled index order (so a
 * client matching by position fails), and `rule` to answer the codes a real
 * server will not produce on demand (429, 401, a 400 for one row).
 */
export async function startFakeOpenAI(
  options: { dim?: number; rule?: FakeRule; model?: string; noBase64?: boolean } = {},
): Promise<{ url: string; seen: SeenRequest[]; close(): Promise<void> }> {
  const dim = options.dim ?? 8;
  const seen: SeenRequest[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const seenReq: SeenRequest = {
        path: req.url ?? "",
        auth: String(req.headers.authorization ?? ""),
        body: text ? JSON.parse(text) : {},
      };
      seen.push(seenReq);
      const special = options.rule?.(seenReq, seen.length);
      if (special) {
        res.writeHead(special.status, { "content-type": "application/json", ...special.headers });
        res.end(special.body);
        return;
      }
      if (req.method === "GET" && seenReq.path.endsWith("/models")) {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ data: [{ id: options.model ?? "fake/model" }] }));
        return;
      }
      const input = seenReq.body.input ?? [];
      const base64 = seenReq.body.encoding_format === "base64" && !options.noBase64;
      const data = input.map((t, index) => {
        const row = fakeVector(t, dim);
        return {
          object: "embedding",
          index,
          embedding: base64 ? encodeBase64Floats(row) : [...row],
        };
      });
      data.reverse();
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          object: "list",
          model: options.model ?? "fake/model",
          data,
          usage: { prompt_tokens: input.length, total_tokens: input.length },
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The fake's vector of a text: positive components from an FNV hash, unit length. */
export function fakeVector(text: string, dim: number): Float32Array {
  const row = new Float32Array(dim);
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619) >>> 0;
  let sq = 0;
  for (let i = 0; i < dim; i++) {
    h = Math.imul(h ^ (i + 1), 16777619) >>> 0;
    const v = (h % 1000) / 1000 + 0.01;
    row[i] = v;
    sq += v * v;
  }
  const s = 1 / Math.sqrt(sq);
  for (let i = 0; i < dim; i++) row[i] = (row[i] ?? 0) * s;
  return row;
}
