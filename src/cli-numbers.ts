/**
 * The numeric flags and their ranges, checked when the command line is
 * parsed: "--truncate_dim abc" is "not a number", never NaN, and a value no
 * server could take (a uint32 overflow, a timer past Node's limit) is refused
 * before any server starts.
 */
interface NumericSpec {
  readonly integer: boolean;
  readonly min: number;
  /** Above `min` strictly, for a value that must be positive but need not be whole. */
  readonly minExclusive?: boolean;
  readonly max: number;
  readonly unit?: string;
}

const UINT32_MAX = 2 ** 32 - 1;
// setTimeout fires at once past 2^31 - 1 ms: longer waits are not waits.
const MAX_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

export const NUMERIC_FLAGS: Readonly<Record<string, NumericSpec>> = {
  batch_size: { integer: true, min: 1, max: 1_000_000 },
  max_batch_tokens: { integer: true, min: 0, max: UINT32_MAX },
  max_workers: { integer: true, min: 1, max: 1024 },
  checkpoint_interval: { integer: true, min: 1, max: UINT32_MAX },
  truncate_dim: { integer: true, min: 0, max: 65_536 },
  max_text_chars: { integer: true, min: 1, max: UINT32_MAX },
  batch_timeout: { integer: false, min: 0, minExclusive: true, max: MAX_SECONDS, unit: "seconds" },
  server_timeout: { integer: false, min: 0, minExclusive: true, max: MAX_SECONDS, unit: "seconds" },
  max_attempts: { integer: true, min: 1, max: 1000 },
  probe_tolerance: { integer: false, min: 0, minExclusive: true, max: 1 },
  quantize_min_cosine: { integer: false, min: 0, minExclusive: true, max: 1 },
  debug_dim: { integer: true, min: 1, max: 65_536 },
  threads: { integer: true, min: 0, max: 4096 },
  sample: { integer: true, min: 1, max: UINT32_MAX },
  seed: { integer: true, min: 0, max: UINT32_MAX },
  tolerance: { integer: false, min: 0, minExclusive: true, max: 1 },
};

/** What is wrong with `raw` as the value of --`flag`; null when nothing. */
export function numericProblem(flag: string, raw: string, spec: NumericSpec): string | null {
  const text = raw.trim();
  const value = text === "" ? Number.NaN : Number(text);
  const what = spec.integer ? "an integer" : "a number";
  const range = `${spec.minExclusive ? "above" : "from"} ${spec.min} ${spec.minExclusive ? "and at most" : "to"} ${spec.max}${spec.unit ? ` ${spec.unit}` : ""}`;
  if (!Number.isFinite(value) || (spec.integer && !Number.isInteger(value))) {
    return `--${flag} must be ${what} ${range} (got "${raw}")`;
  }
  if (value < spec.min || (spec.minExclusive && value === spec.min) || value > spec.max) {
    return `--${flag} must be ${range} (got ${text})`;
  }
  return null;
}

/** The yargs settings of a numeric flag: read as text, checked and turned into a number. */
export function numeric(flag: string): { type: "string"; coerce: (raw: unknown) => number } {
  const spec = NUMERIC_FLAGS[flag];
  if (!spec) throw new Error(`no range for --${flag}`);
  return {
    type: "string",
    coerce: (raw: unknown) => {
      // Given twice: the last one counts, as for any other flag.
      const last = Array.isArray(raw) ? raw[raw.length - 1] : raw;
      const text = String(last ?? "");
      const problem = numericProblem(flag, text, spec);
      if (problem) throw new Error(problem);
      return Number(text.trim());
    },
  };
}
