import { resolve } from "node:path";
import yargs from "yargs";
import { withHelpAndVersion } from "../cli-help.js";
import { DEFAULTS, parseOutputFormats, TOOL_VERSION } from "../config.js";
import { ConfigError, ExitError } from "../errors.js";
import { isOutputDtype, OUTPUT_DTYPES } from "../output/dtype.js";
import { merge } from "./merge.js";

interface MergeArgs {
  output_dir?: string | string[];
  output_format?: string | string[];
  output_dtype?: string | string[];
  input_file?: string | string[];
}

function parser(argv: readonly string[]) {
  const described = yargs([...argv])
    .scriptName("embed-multi merge")
    .usage(
      "$0 --output_dir DIR [--output_format ...] [--output_dtype ...]\n\n" +
        "Merges the finished shards in DIR (shard-KKKKK-of-NNNNN/, made by embed-multi --shard K/N\n" +
        "--output_dir DIR) into the files one unsharded run would have written, in DIR. Refuses\n" +
        "while a shard is unfinished. Compact dtypes (int8, uint8) take their ranges over all\n" +
        "shards. Killed, it is run again to the same files.",
    )
    .option("output_dir", {
      alias: "output-dir",
      type: "string",
      describe: "The shards' parent folder",
    })
    .option("output_format", {
      alias: "output-format",
      type: "string",
      describe: `Output files: npy, jsonl, parquet (both = npy,jsonl) [default: ${DEFAULTS.output_format}]`,
    })
    .option("output_dtype", {
      alias: "output-dtype",
      type: "string",
      describe: `${OUTPUT_DTYPES.join(", ")} [default: ${DEFAULTS.output_dtype}]`,
    })
    .option("input_file", {
      alias: "input-file",
      type: "string",
      describe: "The input, where it is not at the path the shards recorded",
    });
  return withHelpAndVersion(described).fail((message, err) => {
    throw new ConfigError(`${message ?? err?.message} (see embed-multi merge --help)`);
  });
}

function last(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[value.length - 1] : value;
}

/** `embed-multi merge ...`: returns the exit code. */
export async function mergeMain(argv: readonly string[]): Promise<number> {
  try {
    const args = (await parser(argv).parseAsync()) as MergeArgs;
    const outputDir = last(args.output_dir);
    if (!outputDir) throw new ConfigError("--output_dir is required (the shards' parent folder)");
    const dtype = last(args.output_dtype) ?? DEFAULTS.output_dtype;
    if (!isOutputDtype(dtype)) {
      throw new ConfigError(
        `--output_dtype must be one of ${OUTPUT_DTYPES.join(", ")} (got "${dtype}")`,
      );
    }
    const inputFile = last(args.input_file);
    const result = await merge({
      outputDir: resolve(outputDir),
      outputFormat: parseOutputFormats(last(args.output_format) ?? DEFAULTS.output_format),
      outputDtype: dtype,
      inputFile: inputFile ? resolve(inputFile) : null,
      toolVersion: TOOL_VERSION,
      note: (line) => process.stderr.write(`embed-multi merge: ${line}\n`),
    });
    for (const m of result.models) {
      process.stdout.write(`${m.stem}: ${m.rows} rows ${m.merged ? "merged" : "already merged"}\n`);
    }
    process.stdout.write(`outputs in ${resolve(outputDir)}\n`);
    return 0;
  } catch (err) {
    if (err instanceof ExitError) {
      process.stderr.write(`embed-multi merge: error: ${err.message}\n`);
      return err.exitCode;
    }
    const detail = err instanceof Error ? err.message : String(err);
    process.stderr.write(
      `embed-multi merge: internal error: ${detail} (this is a bug; set EMBED_DEBUG=1 for details)\n`,
    );
    if (process.env.EMBED_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return 70;
  }
}
