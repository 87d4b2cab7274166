import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { ConfigError } from "../../errors.js";
import { estimateTokens } from "./batch.js";

/**
 * Token counts for planning when the server hands out no token ids: the
 * model's own tokenizer.json (the same counts as the Rust tokenizers crate,
 * special tokens included), or an estimate from characters. `source` is what
 * the plan line says it used.
 */
export interface TokenCounter {
  readonly source: string;
  /** False: the estimate from characters. */
  readonly exact: boolean;
  count(text: string): number;
}

/**
 * `path` is a tokenizer.json file or a model folder holding one (config
 * `tokenizer:`, or the model's folder in the model directory); "" or a
 * folder without one gives the character estimate.
 */
export function tokenCounter(path: string): TokenCounter {
  const file = path.endsWith(".json") ? path : path ? join(path, "tokenizer.json") : "";
  if (!file || !existsSync(file)) {
    if (path.endsWith(".json")) throw new ConfigError(`tokenizer ${path}: no such file`);
    return {
      source: "an estimate from characters (no tokenizer.json given)",
      exact: false,
      count: estimateTokens,
    };
  }
  let tokenizer: Tokenizer;
  try {
    const json = JSON.parse(readFileSync(file, "utf8")) as object;
    const configFile = join(file, "..", "tokenizer_config.json");
    const config = existsSync(configFile)
      ? (JSON.parse(readFileSync(configFile, "utf8")) as object)
      : {};
    tokenizer = new Tokenizer(json, config);
  } catch (err) {
    throw new ConfigError(
      `tokenizer ${file}: cannot be read as a tokenizer.json (${err instanceof Error ? err.message : String(err)})`,
    );
  }
  return {
    source: `the model's tokenizer.json (${file})`,
    exact: true,
    count: (text) => tokenizer.encode(text).ids.length,
  };
}
