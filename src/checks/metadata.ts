import { readFileSync } from "node:fs";
import type { FileDigest } from "../output/checksum.js";
import {
  isOutputDtype,
  needsRanges,
  type OutputDtype,
  type Ranges,
  rowWidth,
} from "../output/dtype.js";

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
  /** "none" for metadata written before embed-multi could quantize. */
  readonly quantize: string;
  /** Of a quantized run's calibration sample (quantize_fidelity); null when none is recorded. */
  readonly calibrationSha256: string | null;
  readonly inputSha256: string;
  readonly skippedLines: ReadonlySet<number>;
  /** File names (no folder) the run says it wrote, the metadata file included. */
  readonly outputs: readonly string[];
  /** Digests by file name; null for metadata written before embed-multi recorded them. */
  readonly files: ReadonlyMap<string, FileDigest> | null;
  /** The dtype of the vectors in the output files (float32 for metadata older than the field). */
  readonly outputDtype: OutputDtype;
  /** Values per row in the files: dim, or dim/8 packed bytes rounded up for binary dtypes. */
  readonly width: number;
  /** int8/uint8: the per-dimension ranges the run quantized with; null otherwise. */
  readonly ranges: Ranges | null;
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
  const dim = fields.count("embedding_dim");
  const outputDtype = fields.outputDtype();
  const metadata: StoredMetadata = {
    modelName: fields.string("model_name"),
    alias: fields.string("alias"),
    dim,
    rows: fields.count("num_paragraphs"),
    normalize: fields.boolean("normalize"),
    revision: fields.string("revision"),
    dtype: fields.string("dtype"),
    prefix: fields.string("prefix"),
    maxLength: fields.count("max_length"),
    pooling: fields.string("pooling"),
    truncateDim: fields.optionalCount("truncate_dim"),
    quantize: fields.optionalString("quantize", "none"),
    calibrationSha256: fields.calibrationSha256(),
    inputSha256: fields.string("input_sha256"),
    skippedLines: new Set(fields.skippedLines()),
    outputs: fields.outputs(),
    files: fields.files(),
    outputDtype,
    width: rowWidth(outputDtype, dim),
    ranges: needsRanges(outputDtype) ? fields.ranges(dim) : null,
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
  calibrationSha256(): string | null {
    const fidelity = this.record.quantize_fidelity;
    if (fidelity === undefined || fidelity === null) return null;
    const digest = isRecord(fidelity) ? fidelity.calibration_sha256 : undefined;
    if (typeof digest === "string") return digest;
    this.problems.push("field quantize_fidelity has no calibration_sha256 string");
    return null;
  }

  optionalString(key: string, absent: string): string {
    return this.record[key] === undefined ? absent : this.string(key);
  }

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

  outputDtype(): OutputDtype {
    const v = this.record.output_dtype;
    if (v === undefined) return "float32";
    if (typeof v === "string" && isOutputDtype(v)) return v;
    this.problems.push(`field output_dtype ${JSON.stringify(v)} is not an output dtype`);
    return "float32";
  }

  /** quantization.ranges: [min per dimension, max per dimension], dim finite numbers each. */
  ranges(dim: number): Ranges | null {
    const q = this.record.quantization;
    const v = isRecord(q) ? q.ranges : undefined;
    const row = (r: unknown): Float32Array | null =>
      Array.isArray(r) &&
      r.length === dim &&
      r.every((x): x is number => typeof x === "number" && Number.isFinite(x))
        ? Float32Array.from(r)
        : null;
    if (Array.isArray(v) && v.length === 2) {
      const min = row(v[0]);
      const max = row(v[1]);
      if (min && max) return { min, max };
    }
    this.problems.push(
      `field quantization.ranges is missing or not two lists of ${dim} numbers (an int8/uint8 output needs them)`,
    );
    return null;
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
