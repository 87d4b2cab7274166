import { randomInt } from "node:crypto";
import { resolve } from "node:path";
import yargs from "yargs";
import { DEFAULT_OPENAI_OPTIONS } from "../backend/openai/backend.js";
import { DEFAULT_PROBE_TOLERANCE } from "../checks/probe.js";
import { withHelpAndVersion } from "../cli-help.js";
import { numeric } from "../cli-numbers.js";
import { DEFAULTS, type FlagPicker, secondsFlag, serverFlags } from "../config.js";
import { ConfigError } from "../errors.js";
import { type ModelVerdict, type VerifyOptions, verify } from "./verify.js";

interface VerifyArgs {
  max_request_inputs?: number;
  max_request_tokens?: number;
  output_dir?: string;
  input_file?: string;
  sample?: number;
  seed?: number;
  tolerance?: number;
  servers?: string[];
  tls?: boolean;
  tls_ca?: string;
  device?: string;
  engine?: string;
  debug_dim?: number;
  threads?: number;
  verbose?: boolean;
  model_dir?: string;
  server_timeout?: number;
  batch_timeout?: number;
}

function parser(argv: readonly string[]) {
  const described = yargs([...argv])
    .scriptName("embed-multi verify")
    .usage(
      "$0 --output_dir DIR [--input_file FILE.jsonl] [--sample K [--servers ...]]\n\n" +
        "Checks the finished outputs in DIR, model by model: every file is there with the size\n" +
        "and sha256 its metadata records; .npy, JSONL and metadata agree on shape and values;\n" +
        "no NaN or Inf. With the input: row count and JSONL order match it. With --sample K:\n" +
        "K random rows are embedded again (on --servers, or a local server) and compared.\n" +
        "Prints one verdict line per model; exits 0 only if every model passes.",
    )
    .option("output_dir", {
      alias: "output-dir",
      type: "string",
      describe: "Folder of the outputs",
    })
    .option("input_file", {
      alias: "input-file",
      type: "string",
      describe: "The JSONL input the outputs were made from",
    })
    .option("sample", {
      ...numeric("sample"),
      describe: "Embed this many random rows again and compare (needs --input_file)",
    })
    .option("seed", {
      ...numeric("seed"),
      describe: "Seed of the sample [default: random, printed]",
    })
    .option("tolerance", {
      ...numeric("tolerance"),
      describe: `Lowest cosine a re-embedded row may have [default: ${DEFAULT_PROBE_TOLERANCE}]`,
    })
    .option("servers", {
      type: "string",
      array: true,
      describe: "Servers for --sample, host:port[,host:port...]; none = start a local one",
    })
    .option("tls", { type: "boolean", describe: "Connect to the servers over TLS" })
    .option("tls_ca", { alias: "tls-ca", type: "string", describe: "PEM file of the servers' CA" })
    .option("device", {
      type: "string",
      describe: "Device for the sample's model [default: the server's]",
    })
    .option("engine", {
      type: "string",
      describe:
        "Local server engine [default: debug for debug-engine outputs, else sentence-transformers]",
    })
    .option("debug_dim", {
      alias: "debug-dim",
      ...numeric("debug_dim"),
      describe: "Debug engine dimension",
    })
    .option("threads", {
      ...numeric("threads"),
      describe: "CPU threads of the local server's torch",
    })
    .option("model_dir", {
      alias: "model-dir",
      type: "string",
      describe: "Local server's model directory",
    })
    .option("server_timeout", {
      alias: "server-timeout",
      ...numeric("server_timeout"),
      describe: `Seconds to wait for a server [default: ${DEFAULTS.server_timeout}]`,
    })
    .option("batch_timeout", {
      alias: "batch-timeout",
      ...numeric("batch_timeout"),
      describe: `Seconds a server may take for one batch [default: ${DEFAULTS.batch_timeout}]`,
    })
    .example("$0 --output_dir out --input_file data.jsonl", "Check files, hashes and order")
    .example(
      "$0 --output_dir out --input_file data.jsonl --sample 64 --servers gpu1:50051",
      "Also embed 64 rows again on gpu1 and compare",
    )
    .epilogue("Environment: EMBED_AUTH_TOKEN (bearer token for the servers), EMBED_MODEL_DIR.");
  return withHelpAndVersion(described).fail((message, err) => {
    throw new ConfigError(`${message ?? err?.message} (see embed-multi verify --help)`);
  });
}

function last<T>(value: T | T[] | undefined): T | undefined {
  return Array.isArray(value) ? value[value.length - 1] : value;
}

function buildOptions(args: VerifyArgs, env: NodeJS.ProcessEnv): VerifyOptions {
  const outputDir = last(args.output_dir);
  if (!outputDir) throw new ConfigError("--output_dir is required (see embed-multi verify --help)");
  const inputFile = last(args.input_file) ?? null;
  const size = last(args.sample);
  if (size !== undefined && (!Number.isInteger(size) || size < 1)) {
    throw new ConfigError(`--sample must be a positive integer (got ${size})`);
  }
  if (size !== undefined && !inputFile) {
    throw new ConfigError("--sample needs --input_file: the texts to embed again come from it");
  }
  const tolerance = last(args.tolerance) ?? DEFAULT_PROBE_TOLERANCE;
  if (!(tolerance > -1 && tolerance <= 1)) {
    throw new ConfigError(`--tolerance must be a cosine in (-1, 1] (got ${tolerance})`);
  }
  const seed = last(args.seed) ?? randomInt(0, 2 ** 31);
  if (!Number.isInteger(seed) || seed < 0) {
    throw new ConfigError(`--seed must be a non-negative integer (got ${seed})`);
  }
  // The same flags as the run's, read and checked by the same code.
  const pick: FlagPicker = <T>(key: keyof VerifyArgs, fallback: T): T =>
    key === "servers" ? ((args.servers as T) ?? fallback) : ((last(args[key]) as T) ?? fallback);
  const reach = serverFlags(pick, env);
  return {
    outputDir: resolve(outputDir),
    inputFile,
    sample:
      size === undefined
        ? null
        : {
            size,
            seed,
            tolerance,
            device: last(args.device) ?? "",
            batchTimeoutMs: secondsFlag(
              "batch_timeout",
              last(args.batch_timeout) ?? DEFAULTS.batch_timeout,
            ),
          },
    servers: reach.servers,
    embedded: reach.embedded,
    engineGiven: args.engine !== undefined,
    connection: {
      tls: reach.tls,
      authToken: reach.authToken,
      // The key and caps of the run's flags; model ids as the served names.
      openai: reach.openai ? { ...DEFAULT_OPENAI_OPTIONS, ...reach.openai } : undefined,
    },
    serverTimeoutMs: secondsFlag(
      "server_timeout",
      last(args.server_timeout) ?? DEFAULTS.server_timeout,
    ),
  };
}

function verdictLines(v: ModelVerdict): string {
  if (v.ok) return `ok    ${v.stem}: ${v.checked.join("; ")}\n`;
  const [first, ...rest] = v.problems;
  const more = rest.length > 0 ? ` (+${rest.length} more below)` : "";
  const details = rest.map((p) => `        ${p}\n`).join("");
  return `FAIL  ${v.stem}: ${first}${more}\n${details}`;
}

/**
 * `embed-multi verify ...`: returns the exit code (0: every model passed, 1:
 * one failed); errors go to the one top-level catch (main.ts).
 */
export async function verifyMain(argv: readonly string[]): Promise<number> {
  const args = (await parser(argv).parseAsync()) as VerifyArgs;
  const options = buildOptions(args, process.env);
  const verdicts = await verify(options, (v) => process.stdout.write(verdictLines(v)));
  const failed = verdicts.filter((v) => !v.ok).length;
  process.stdout.write(
    failed === 0
      ? `verified ${verdicts.length} model${verdicts.length === 1 ? "" : "s"} in ${options.outputDir}: all ok\n`
      : `${failed} of ${verdicts.length} models failed verification in ${options.outputDir}\n`,
  );
  return failed === 0 ? 0 : 1;
}
