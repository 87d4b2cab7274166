/**
 * The GPU benchmark's batches, cut by the orchestrator's own planner: bench/gpu/bench.py
 * runs this (with the kit's node) so that its in-process and bare-forward rows go over
 * the batches the CLI sends, never a copy of the planner that drifts.
 *
 *   node dist/bench/gpu/plan.js --input FILE --counts FILE --max-length N --dim N
 *     --batch-size N --max-batch-tokens N
 *     --server-max-batch-size N --server-max-batch-tokens N --server-max-message-bytes N
 *     --server-max-text-chars N
 *
 * --counts: a JSON array, each row's token count as the server's CountTokens gives it.
 * The input is scanned as the CLI scans it (its line lengths are the byte cap's); the
 * counts are clipped at the model's max length as measureTokens clips them; the limits
 * are the CLI's (batchLimits over what was asked and what the server reports). Every row
 * is planned (the benchmark runs the CLI with --no-dedupe). Prints one JSON object:
 * { batches: [[row, ...], ...], batchSize, maxBatchTokens, maxBatchBytes }.
 */
import { readFileSync } from "node:fs";
import { scanInput } from "../../src/input/scan.js";
import { batchLimits } from "../../src/plan/limits.js";
import { planBatches } from "../../src/plan/planner.js";

const FLAGS = [
  "input",
  "counts",
  "max-length",
  "dim",
  "batch-size",
  "max-batch-tokens",
  "server-max-batch-size",
  "server-max-batch-tokens",
  "server-max-message-bytes",
  "server-max-text-chars",
] as const;
type Flag = (typeof FLAGS)[number];

function parse(argv: readonly string[]): Record<Flag, string> {
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i]?.replace(/^--/, "") ?? "";
    const value = argv[i + 1];
    if (!(FLAGS as readonly string[]).includes(name) || value === undefined) {
      throw new Error(`unknown or valueless argument '${argv[i]}'`);
    }
    values.set(name, value);
  }
  const missing = FLAGS.filter((f) => !values.has(f));
  if (missing.length > 0) throw new Error(`missing --${missing.join(", --")}`);
  return Object.fromEntries(values) as Record<Flag, string>;
}

function integer(flags: Record<Flag, string>, name: Flag): number {
  const value = Number(flags[name]);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Error(`--${name} must be a whole number >= 0, not '${flags[name]}'`);
  }
  return value;
}

async function main(): Promise<void> {
  const flags = parse(process.argv.slice(2));
  const corpus = await scanInput(flags.input, {
    maxTextChars: integer(flags, "server-max-text-chars"),
    skipInvalid: false,
  });
  const counts: unknown = JSON.parse(readFileSync(flags.counts, "utf8"));
  if (!Array.isArray(counts) || counts.length !== corpus.rows) {
    throw new Error(
      `${flags.counts} must hold one count per row of ${flags.input} (${corpus.rows})`,
    );
  }
  const cap = integer(flags, "max-length") || Number.MAX_SAFE_INTEGER;
  // As measureTokens: a missing count is 1, every count at most the max length.
  const lengths = Uint32Array.from(counts, (c) => Math.min(cap, typeof c === "number" ? c : 1));
  const limits = batchLimits(
    {
      batchSize: integer(flags, "batch-size"),
      maxBatchTokens: integer(flags, "max-batch-tokens"),
    },
    {
      maxBatchSize: integer(flags, "server-max-batch-size"),
      maxBatchTokens: integer(flags, "server-max-batch-tokens"),
      maxMessageBytes: integer(flags, "server-max-message-bytes"),
    },
    integer(flags, "dim"),
  );
  // As src/run/plan.ts: a batch's lines must fit the server's message cap.
  const plan = planBatches(lengths, { ...limits, rowBytes: corpus.byteLengths });
  const out = {
    batches: plan.batches.map((b) => Array.from(b.rows)),
    batchSize: limits.batchSize,
    maxBatchTokens: limits.maxBatchTokens,
    maxBatchBytes: limits.maxBatchBytes,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`plan.js: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
