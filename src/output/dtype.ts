/**
 * Output dtypes with the semantics of sentence-transformers'
 * `quantize_embeddings` (int8, uint8, binary, ubinary) plus float16 (numpy's
 * `astype(np.float16)`). The float32 matrix is the source; these are derived
 * from it chunk by chunk, so the same chunk always gives the same bytes.
 */
export const OUTPUT_DTYPES = ["float32", "float16", "int8", "uint8", "binary", "ubinary"] as const;
export type OutputDtype = (typeof OUTPUT_DTYPES)[number];

export function isOutputDtype(value: string): value is OutputDtype {
  return (OUTPUT_DTYPES as readonly string[]).includes(value);
}

/** Per-dimension [min, max] of this run's float32 embeddings: int8/uint8 scale by them. */
export interface Ranges {
  readonly min: Float32Array;
  readonly max: Float32Array;
}

export function needsRanges(dtype: OutputDtype): boolean {
  return dtype === "int8" || dtype === "uint8";
}

/** numpy's name of the element type, as in an .npy header. */
export function npyDescr(dtype: OutputDtype): string {
  switch (dtype) {
    case "float32":
      return "<f4";
    case "float16":
      return "<f2";
    case "int8":
    case "binary":
      return "|i1";
    case "uint8":
    case "ubinary":
      return "|u1";
  }
}

/** numpy's dtype name of the stored values (binary dtypes store packed bytes). */
export function storedType(dtype: OutputDtype): "float32" | "float16" | "int8" | "uint8" {
  if (dtype === "binary") return "int8";
  if (dtype === "ubinary") return "uint8";
  return dtype;
}

/** Values per row: the dimension, or packed bytes (8 dimensions each) for binary dtypes. */
export function rowWidth(dtype: OutputDtype, dim: number): number {
  return dtype === "binary" || dtype === "ubinary" ? Math.ceil(dim / 8) : dim;
}

export function bytesPerValue(dtype: OutputDtype): number {
  if (dtype === "float32") return 4;
  return dtype === "float16" ? 2 : 1;
}

/** Streaming min/max, fed row chunks of the float32 matrix. */
export class RangeAccumulator {
  readonly min: Float32Array;
  readonly max: Float32Array;

  constructor(private readonly dim: number) {
    this.min = new Float32Array(dim).fill(Number.POSITIVE_INFINITY);
    this.max = new Float32Array(dim).fill(Number.NEGATIVE_INFINITY);
  }

  add(floats: Float32Array, rows: number): void {
    const { dim, min, max } = this;
    for (let r = 0; r < rows; r++) {
      const base = r * dim;
      for (let d = 0; d < dim; d++) {
        const v = floats[base + d] as number;
        if (v < (min[d] as number)) min[d] = v;
        if (v > (max[d] as number)) max[d] = v;
      }
    }
  }

  finish(): Ranges {
    return { min: this.min, max: this.max };
  }
}

/** Turns rows of float32 into rows of the output dtype (little-endian bytes). */
export class Encoder {
  readonly width: number;
  readonly rowBytes: number;
  private readonly starts: Float32Array;
  private readonly steps: Float32Array;

  constructor(
    readonly dtype: OutputDtype,
    readonly dim: number,
    ranges: Ranges | null,
  ) {
    this.width = rowWidth(dtype, dim);
    this.rowBytes = this.width * bytesPerValue(dtype);
    this.starts = new Float32Array(dim);
    this.steps = new Float32Array(dim);
    if (needsRanges(dtype)) {
      if (!ranges) throw new Error(`${dtype} needs the ranges of the embeddings`);
      // steps = (max - min) / 255 in float32, and 1 where a dimension is constant.
      for (let d = 0; d < dim; d++) {
        const start = ranges.min[d] as number;
        this.starts[d] = start;
        const step = Math.fround(Math.fround((ranges.max[d] as number) - start) / 255);
        this.steps[d] = step === 0 ? 1 : step;
      }
    }
  }

  /** Encodes `rows` rows of `floats` into `into` (rows × rowBytes bytes); returns that part. */
  encode(floats: Float32Array, rows: number, into: Uint8Array): Uint8Array {
    const { dim, width } = this;
    const out = into.subarray(0, rows * this.rowBytes);
    switch (this.dtype) {
      case "float32":
        out.set(new Uint8Array(floats.buffer, floats.byteOffset, rows * dim * 4));
        break;
      case "float16": {
        const halves = new Uint16Array(out.buffer, out.byteOffset, rows * dim);
        for (let i = 0; i < rows * dim; i++) halves[i] = float16Bits(floats[i] as number);
        break;
      }
      case "int8":
      case "uint8": {
        const offset = this.dtype === "int8" ? 128 : 0;
        const { starts, steps } = this;
        for (let r = 0; r < rows; r++) {
          const base = r * dim;
          for (let d = 0; d < dim; d++) {
            // numpy: clip(floor((x - start) / step), 0, 255), each step in float32.
            const scaled = Math.fround(
              Math.fround((floats[base + d] as number) - (starts[d] as number)) /
                (steps[d] as number),
            );
            const q = Math.min(255, Math.max(0, Math.floor(scaled)));
            out[base + d] = (q - offset) & 0xff;
          }
        }
        break;
      }
      case "binary":
      case "ubinary": {
        // numpy.packbits(x > 0): the first dimension is the high bit; binary subtracts 128.
        const offset = this.dtype === "binary" ? 128 : 0;
        for (let r = 0; r < rows; r++) {
          const base = r * dim;
          for (let b = 0; b < width; b++) {
            let byte = 0;
            for (let bit = 0; bit < 8; bit++) {
              const d = b * 8 + bit;
              if (d < dim && (floats[base + d] as number) > 0) byte |= 0x80 >> bit;
            }
            out[r * width + b] = (byte - offset) & 0xff;
          }
        }
        break;
      }
    }
    return out;
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half-precision bits of a float32, rounded to nearest, ties to even (as numpy). */
export function float16Bits(value: number): number {
  f32[0] = value;
  const bits = u32[0] as number;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf, NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // too large: inf
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: zero
    const m = mant | 0x800000;
    const shift = 14 - e;
    const halfway = 1 << (shift - 1);
    let r = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    if (rem > halfway || (rem === halfway && (r & 1) === 1)) r++;
    return sign | r;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to inf).
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++;
  return sign | h;
}

/** The value of half-precision bits, exactly (every one is a float32 too). */
export function float16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}
