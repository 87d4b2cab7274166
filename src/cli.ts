import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { withHelpAndVersion } from "./cli-help.js";
import { numeric } from "./cli-numbers.js";
import { type CliArgs, DEFAULTS } from "./config.js";
import { guarded, main } from "./main.js";
import { mergeMain } from "./merge/cli.js";
import { verifyMain } from "./verify/cli.js";

// A reader that went away (`embed-multi verify ... | head -1`) ends the command quietly,
// with the status of a process a closed pipe stopped (128 + SIGPIPE), not a stack trace.
// The exit handlers still run: an embedded server is stopped, the checkpoint is consistent.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(141);
    throw err;
  });
}

/** Only declares the flags; everything else happens in main() and run(). */
const described = yargs(hideBin(process.argv))
  .scriptName("embed-multi")
  .usage(
    "$0 --input_file FILE.jsonl --output_dir DIR --models NAME [NAME...] [options]\n\n" +
      "Embeds every paragraph of a JSONL file (fields paper_id, paragraph_index, text) with\n" +
      "each model, through gRPC inference servers (a local one is started when --servers is\n" +
      "not given). Writes <model>.npy, <model>.jsonl and <model>.metadata.json per model.\n" +
      "Progress is checkpointed: run the same command again to resume after a crash.\n\n" +
      "$0 verify --output_dir DIR [...] checks finished outputs (see $0 verify --help).\n" +
      "$0 merge --output_dir DIR merges the shards of a --shard K/N run (see $0 merge --help).",
  )
  .option("input_file", {
    alias: "input-file",
    type: "string",
    describe: "JSONL input, one paragraph per line",
  })
  .option("output_dir", {
    alias: "output-dir",
    type: "string",
    describe: "Folder for the outputs and the checkpoint (created if missing)",
  })
  .option("models", {
    type: "string",
    array: true,
    describe:
      "Models to run: registry names (bge-large-en-v1.5, e5-large-v2, all-MiniLM-L6-v2, ...), names from --config, or any Hugging Face id",
  })
  .option("batch_size", {
    alias: "batch-size",
    ...numeric("batch_size"),
    describe: `Most paragraphs per batch [default: ${DEFAULTS.batch_size}]`,
  })
  .option("max_batch_tokens", {
    alias: "max-batch-tokens",
    ...numeric("max_batch_tokens"),
    describe: `Most padded tokens per batch; 0 = no limit [default: ${DEFAULTS.max_batch_tokens}]`,
  })
  .option("max_workers", {
    alias: "max-workers",
    ...numeric("max_workers"),
    describe: `Batches in flight per server [default: ${DEFAULTS.max_workers}]`,
  })
  .option("checkpoint_interval", {
    alias: "checkpoint-interval",
    ...numeric("checkpoint_interval"),
    describe: `Paragraphs between durable checkpoints [default: ${DEFAULTS.checkpoint_interval}]`,
  })
  .option("device", {
    type: "string",
    describe: "Device for the models: cpu, cuda, cuda:0, ... [default: the server's]",
  })
  .option("dtype", {
    type: "string",
    describe:
      "auto (float16 on CUDA, float32 on CPU), float32, float16 or bfloat16 [default: auto]",
  })
  .option("quantize", {
    type: "string",
    describe:
      "none, or int8: static int8 quantization of the local CPU engine (OpenVINO, by NNCF), calibrated on up to 256 of this run's own paragraphs spread evenly over the input; its fidelity on them (lowest and mean cosine to float32) goes into the metadata and the summary. Not with --engine torch or debug, nor on a GPU [default: none]",
  })
  .option("quantize_min_cosine", {
    alias: "quantize-min-cosine",
    ...numeric("quantize_min_cosine"),
    describe: `With --quantize int8: the least cosine between any calibration paragraph's int8 and float32 vectors; below it the run stops before embedding [default: ${DEFAULTS.quantize_min_cosine}]`,
  })
  .option("truncate_dim", {
    alias: "truncate-dim",
    ...numeric("truncate_dim"),
    describe:
      "Matryoshka: keep the first N dimensions of every model's embeddings (cut before normalizing); a model's truncate_dim in --config wins; 0 = full [default: 0]",
  })
  .option("servers", {
    type: "string",
    array: true,
    describe:
      "Inference servers host:port[,host:port...] or dns:///name:port (every address of the name), or OpenAI-compatible ones openai:http(s)://host:port/v1[,...] (key in OPENAI_API_KEY or EMBED_AUTH_TOKEN); none = start a local one",
  })
  .option("config", {
    type: "string",
    describe: "JSON or YAML file with model entries (models:) and flag defaults (defaults:)",
  })
  .option("output_format", {
    alias: "output-format",
    type: "string",
    describe: `Output files, a list of npy, jsonl, parquet (both = npy,jsonl) [default: ${DEFAULTS.output_format}]`,
  })
  .option("output_dtype", {
    alias: "output-dtype",
    type: "string",
    describe: `Dtype of the output vectors: float32, float16, int8, uint8 (scaled per dimension by this run's ranges), binary, ubinary (packed bits) [default: ${DEFAULTS.output_dtype}]`,
  })
  .option("restart", {
    type: "boolean",
    describe: "Discard the checkpoint and this run's outputs in --output_dir and start over",
  })
  .option("skip_invalid", {
    alias: "skip-invalid",
    type: "boolean",
    describe: "Skip invalid input lines (listed in the metadata) instead of stopping",
  })
  .option("reuse", {
    type: "string",
    array: true,
    describe:
      "Finished --output_dir of an earlier run (repeatable): rows whose model input it embedded with the same model settings take its vectors, copied, instead of being sent to the servers",
  })
  .option("dedupe", {
    type: "boolean",
    describe:
      "Embed each distinct model input once and copy its vector to every row that has it; --no-dedupe sends every row [default: true]",
  })
  .option("max_text_chars", {
    alias: "max-text-chars",
    ...numeric("max_text_chars"),
    describe: `Longest paragraph accepted, in characters [default: ${DEFAULTS.max_text_chars}]`,
  })
  .option("batch_timeout", {
    alias: "batch-timeout",
    ...numeric("batch_timeout"),
    describe: `Seconds a server may take for one batch before it counts as hung [default: ${DEFAULTS.batch_timeout}]`,
  })
  .option("server_timeout", {
    alias: "server-timeout",
    ...numeric("server_timeout"),
    describe: `Seconds to wait for a server to come up, or back, before stopping [default: ${DEFAULTS.server_timeout}]`,
  })
  .option("max_attempts", {
    alias: "max-attempts",
    ...numeric("max_attempts"),
    describe: `Attempts per batch before the run stops [default: ${DEFAULTS.max_attempts}]`,
  })
  .option("probe_tolerance", {
    alias: "probe-tolerance",
    ...numeric("probe_tolerance"),
    describe: `Least cosine between a server's probe vectors and the ones stored for the model; a server below it is kept out of the run [default: ${DEFAULTS.probe_tolerance}]`,
  })
  .option("verbose", {
    type: "boolean",
    describe:
      "Debug log on stderr: per batch the server, rows, tokens and seconds, every retry and keep-out decision; the embedded server logs each batch too (EMBED_LOG_LEVEL=debug). Never texts or the token",
  })
  .option("spot_check", {
    alias: "spot-check",
    type: "number",
    describe: `Known rows (the probe texts, rows another server embedded) carried inside ordinary batches, as a fraction of rows; a server that gets one wrong is kept out and its batches since its last passed check are redone; 0 turns it off [default: ${DEFAULTS.spot_check}]`,
  })
  .option("max_request_inputs", {
    alias: "max-request-inputs",
    type: "number",
    describe: `openai: servers: texts per request at most [default: ${DEFAULTS.max_request_inputs}]`,
  })
  .option("max_request_tokens", {
    alias: "max-request-tokens",
    type: "number",
    describe: `openai: servers: tokens per request at most [default: ${DEFAULTS.max_request_tokens}]`,
  })
  .option("tls", {
    type: "boolean",
    describe: "Connect to the servers over TLS (the token goes in EMBED_AUTH_TOKEN)",
  })
  .option("tls_ca", {
    alias: "tls-ca",
    type: "string",
    describe: "PEM file of the CA that signed the servers' certificates (implies --tls)",
  })
  .option("engine", {
    type: "string",
    describe:
      "Local server engine: sentence-transformers (on a CPU through OpenVINO where it matches torch float32 at load), openvino, torch (the reference torch path), or debug (fast fake vectors, for tests)",
  })
  .option("debug_dim", {
    alias: "debug-dim",
    ...numeric("debug_dim"),
    describe: `Dimension of the debug engine's vectors [default: ${DEFAULTS.debug_dim}]`,
  })
  .option("threads", {
    ...numeric("threads"),
    describe: "CPU threads of the local server's torch; 0 = torch's default",
  })
  .option("model_dir", {
    alias: "model-dir",
    type: "string",
    describe: "Model directory of the local server [default: EMBED_MODEL_DIR or ./models]",
  })
  .option("shard", {
    type: "string",
    describe:
      "K/N: embed only shard K (0 to N-1) of N contiguous row ranges, into <output_dir>/shard-0000K-of-0000N/ (then embed-multi merge)",
  })
  .option("num_shards", {
    alias: "num-shards",
    type: "number",
    describe: "N shards, this one's index from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job)",
  })
  .option("resolve_interval", {
    alias: "resolve-interval",
    type: "number",
    describe: `Seconds between resolutions of a dns:/// name during the run: new addresses join, vanished ones are drained [default: ${DEFAULTS.resolve_interval}]`,
  })
  .option("metrics_port", {
    alias: "metrics-port",
    type: "number",
    describe:
      "Serve Prometheus metrics at /metrics on this port; 0 picks a free one [default: off]",
  })
  .option("metrics_host", {
    alias: "metrics-host",
    type: "string",
    describe: "Address the metrics are served on (0.0.0.0 in a pod) [default: 127.0.0.1]",
  })
  .option("metrics_linger", {
    alias: "metrics-linger",
    type: "number",
    describe:
      "Seconds to keep serving the metrics after the run (final counts; SIGTERM ends it) [default: 0]",
  })
  .option("progress", {
    type: "string",
    describe: "auto (bars on a terminal, log lines otherwise), bar, log or none",
  })
  .example(
    "$0 --input_file examples/paragraphs.jsonl --output_dir out --models all-MiniLM-L6-v2",
    "Embed with the local server",
  )
  .example(
    "$0 --input_file data.jsonl --output_dir out --models bge-large-en-v1.5 e5-large-v2 --servers gpu1:50051,gpu2:50051",
    "Two models on two remote GPU hosts",
  )
  .epilogue(
    "Environment: EMBED_AUTH_TOKEN (bearer token for the servers), EMBED_MODEL_DIR, EMBED_VENV.",
  );
const parser = withHelpAndVersion(described).fail((message, err) => {
  process.stderr.write(`embed-multi: error: ${message ?? err?.message} (see --help)\n`);
  process.exit(2);
});

const argv = hideBin(process.argv);
if (argv[0] === "verify") {
  process.exitCode = await guarded("embed-multi verify", () => verifyMain(argv.slice(1)));
} else if (argv[0] === "merge") {
  process.exitCode = await guarded("embed-multi merge", () => mergeMain(argv.slice(1)));
} else {
  const args = (await parser.parseAsync()) as unknown as CliArgs;
  process.exitCode = await main(args);
}
