import { readFileSync } from "node:fs";
import type { FileDigest } from "../output/checksum.js";

/** The fields of `<stem>.metadata.json` that verify relies on, checked for type. */
export interface StoredMetadata {
  readonly modelName: string;
  readonly alias: string;
  readonly dim: number;
  readonly rows: number;
  readonly normalize: boolean;
  readonly revision: string;
  readonly dtype: string;
  readonly prefix: string;
  readonly maxLength: number;
  readonly pooling: string;
  /** 0 for metadata written before embed-multi could truncate. */
  readonly truncateDim: number;
  readonly inputSha256: string;
  readonly skippedLines: ReadonlySet<number>;
  /** File names (no folder) the run says it wrote, the metadata file included. */
  readonly outputs: readonly string[];
  /** Digests by file name; null for metadata written before embed-multi recorded them. */
  readonly files: ReadonlyMap<string, FileDigest> | null;
}

export type MetadataRead = { ok: true; metadata: StoredMetadata } | { ok: false; problem: string };

/** Reads and checks a metadata file; a problem names the file and the field. */
export function readStoredMetadata(path: string, name: string): MetadataRead {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    const why = err instanceof SyntaxError ? `not valid JSON (${err.message})` : String(err);
    return { ok: false, problem: `${name}: ${why}` };
  }
  if (!isRecord(value)) return { ok: false, problem: `${name}: not a JSON object` };
  const fields = new Fields(value);
  const metadata: StoredMetadata = {
    modelName: fields.string("model_name"),
    alias: fields.string("alias"),
    dim: fields.count("embedding_dim"),
    rows: fields.count("num_paragraphs"),
    normalize: fields.boolean("normalize"),
    revision: fields.string("revision"),
    dtype: fields.string("dtype"),
    prefix: fields.string("prefix"),
    maxLength: fields.count("max_length"),
    pooling: fields.string("pooling"),
    truncateDim: fields.optionalCount("truncate_dim"),
    inputSha256: fields.string("input_sha256"),
    skippedLines: new Set(fields.skippedLines()),
    outputs: fields.outputs(),
    files: fields.files(),
  };
  if (fields.problems.length > 0) {
    return { ok: false, problem: `${name}: ${fields.problems.join(", ")}` };
  }
  return { ok: true, metadata };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Reads fields, collecting what is missing or mistyped instead of stopping at the first. */
class Fields {
  readonly problems: string[] = [];
  constructor(private readonly record: Record<string, unknown>) {}

  string(key: string): string {
    const v = this.record[key];
    if (typeof v === "string") return v;
    this.problems.push(`field ${key} is missing or not a string`);
    return "";
  }

  count(key: string): number {
    const v = this.record[key];
    if (typeof v === "number" && Number.isInteger(v) && v >= 0) return v;
    this.problems.push(`field ${key} is missing or not a count`);
    return 0;
  }

  /** A count that older metadata lacks: 0 when absent. */
  optionalCount(key: string): number {
    return this.record[key] === undefined ? 0 : this.count(key);
  }

  boolean(key: string): boolean {
    const v = this.record[key];
    if (typeof v === "boolean") return v;
    this.problems.push(`field ${key} is missing or not true/false`);
    return false;
  }

  skippedLines(): number[] {
    const v = this.record.skipped_lines;
    if (v === undefined) return [];
    if (Array.isArray(v)) {
      const lines = v.map((s) => (isRecord(s) ? s.line : undefined));
      if (lines.every((l): l is number => typeof l === "number")) return lines;
    }
    this.problems.push("field skipped_lines is not a list of {line, problem}");
    return [];
  }

  outputs(): string[] {
    const v = this.record.outputs;
    if (Array.isArray(v) && v.every((o): o is string => typeof o === "string")) {
      // Recorded as the run saw them (with its folder); what counts is the name.
      return v.map((o) => o.split(/[\\/]/).pop() ?? o);
    }
    this.problems.push("field outputs is missing or not a list of file names");
    return [];
  }

  files(): Map<string, FileDigest> | null {
    const v = this.record.files;
    if (v === undefined) return null;
    const files = new Map<string, FileDigest>();
    if (isRecord(v)) {
      for (const [name, digest] of Object.entries(v)) {
        if (
          isRecord(digest) &&
          typeof digest.sha256 === "string" &&
          typeof digest.bytes === "number" &&
          !name.includes("/") &&
          !name.includes("\\")
        ) {
          files.set(name, { sha256: digest.sha256, bytes: digest.bytes });
        } else {
          this.problems.push(`field files has a bad entry for ${JSON.stringify(name)}`);
        }
      }
      return files;
    }
    this.problems.push("field files is not an object of {sha256, bytes}");
    return null;
  }
}
