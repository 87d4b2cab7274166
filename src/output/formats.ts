/**
 * The output formats: the one list that the run's writing, the completeness
 * check and `verify` all read. A new format is one entry here; the compiler
 * then asks for its writer (output/finalize.ts) and its checker (verify.ts).
 * The order is verify's: a .npy first, so that the others are compared with it.
 */
export const OUTPUT_FORMATS = ["npy", "jsonl", "parquet"] as const;

export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** The file name ending of each format's file, after the model's file stem. */
export const FORMAT_EXTENSIONS: Readonly<Record<OutputFormat, string>> = {
  npy: ".npy",
  jsonl: ".jsonl",
  parquet: ".parquet",
};

/** The format a file name is of, by its ending; null for none of ours. */
export function formatOf(name: string): OutputFormat | null {
  return OUTPUT_FORMATS.find((f) => name.endsWith(FORMAT_EXTENSIONS[f])) ?? null;
}
