import { closeSync, constants, openSync, readdirSync, readSync, rmSync, writeSync } from "node:fs";
import { endianness } from "node:os";
import { join } from "node:path";
import type { TokenIds } from "../backend/types.js";
import { describeFsError } from "../errors.js";

const PREFIX = ".embed-multi-tokens-";
const TRUNCATED = 1;
/** The row's ids are stored as uint32 (some id ≥ 65536), else uint16. */
const WIDE = 2;

/** Where a model's scratch token store lives in the output folder. */
export function tokenStorePath(outputDir: string, fileStem: string): string {
  return join(outputDir, `${PREFIX}${fileStem}.bin`);
}

/** Stores left by a run that was killed: useless to a resumed run, which sends texts. */
export function removeTokenStores(outputDir: string): void {
  for (const path of tokenStorePaths(outputDir)) rmSync(path, { force: true });
}

/** The token stores in `outputDir` (a killed run's, or none). */
export function tokenStorePaths(outputDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(outputDir);
  } catch {
    return [];
  }
  return names
    .filter((name) => name.startsWith(PREFIX) && name.endsWith(".bin"))
    .map((name) => join(outputDir, name));
}

/**
 * The token ids the measuring pass got from the server, kept for the Embed
 * batches, so that the server tokenizes each text once per model. On disk (a
 * million paragraphs of 300 tokens are 600 MB), each row as uint16 when all
 * its ids fit, else uint32; where each row is, in memory. Ids are little-endian
 * on the wire; the store keeps the host's order, so it is used on
 * little-endian hosts only (see `available`).
 */
export class TokenStore {
  private readonly offsets: Float64Array;
  private readonly lengths: Uint32Array;
  private readonly flags: Uint8Array;
  private readonly has: Uint8Array;
  private end = 0;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    rows: number,
  ) {
    this.offsets = new Float64Array(rows);
    this.lengths = new Uint32Array(rows);
    this.flags = new Uint8Array(rows);
    this.has = new Uint8Array(rows);
  }

  static get available(): boolean {
    return endianness() === "LE";
  }

  /** A new, empty store; a link at the path is refused, not followed. */
  static create(path: string, rows: number): TokenStore {
    let fd: number;
    try {
      fd = openSync(
        path,
        constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC | (constants.O_NOFOLLOW ?? 0),
        0o600,
      );
    } catch (err) {
      throw describeFsError(err, "create", path);
    }
    return new TokenStore(path, fd, rows);
  }

  /** Appends the ids of `rows` (in the order of `tokens`' rows). */
  add(rows: ArrayLike<number>, tokens: TokenIds): void {
    const count = tokens.lengths.length;
    if (count !== rows.length || tokens.truncated.length !== count) {
      throw new Error(`the server returned ids of ${count} texts for ${rows.length}`);
    }
    const ids = alignedUint32(tokens.ids);
    // Plain typed arrays (offset 0), never pooled Buffers, so that the views below are aligned.
    const out = new Uint8Array(ids.length * 4);
    let at = 0;
    let source = 0;
    for (let i = 0; i < count; i++) {
      const row = rows[i] ?? 0;
      const length = tokens.lengths[i] ?? 0;
      if (source + length > ids.length) throw new Error("the server returned too few ids");
      const rowIds = ids.subarray(source, source + length);
      source += length;
      let wide = false;
      for (const id of rowIds) {
        if (id > 0xffff) {
          wide = true;
          break;
        }
      }
      this.offsets[row] = this.end + at;
      this.lengths[row] = length;
      this.flags[row] = (tokens.truncated[i] ? TRUNCATED : 0) | (wide ? WIDE : 0);
      this.has[row] = 1;
      if (wide) {
        new Uint32Array(out.buffer, out.byteOffset + at, length).set(rowIds);
        at += length * 4;
      } else {
        // A 2-byte offset: a Uint16Array view needs it; earlier wide rows keep `at` even.
        new Uint16Array(out.buffer, out.byteOffset + at, length).set(rowIds);
        at += length * 2;
      }
      // Keep every row 4-byte aligned in `out`, so that the next view is legal.
      if (at % 4 !== 0) at += 2;
    }
    if (source !== ids.length) throw new Error("the server returned more ids than its lengths");
    try {
      writeSync(this.fd, out, 0, at, this.end);
    } catch (err) {
      throw describeFsError(err, "write", this.path);
    }
    this.end += at;
  }

  /** Whether every row in `rows` has its ids here. */
  holds(rows: ArrayLike<number>): boolean {
    for (let i = 0; i < rows.length; i++) if (!this.has[rows[i] ?? 0]) return false;
    return true;
  }

  /** The rows' ids as an EmbedBatch carries them. */
  batch(rows: ArrayLike<number>): TokenIds {
    let total = 0;
    for (let i = 0; i < rows.length; i++) total += this.lengths[rows[i] ?? 0] ?? 0;
    const ids = new Uint32Array(total);
    const lengths = new Array<number>(rows.length);
    const truncated = new Array<boolean>(rows.length);
    let scratch = new Uint8Array(4096);
    let at = 0;
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i] ?? 0;
      const length = this.lengths[row] ?? 0;
      const flags = this.flags[row] ?? 0;
      const bytes = length * (flags & WIDE ? 4 : 2);
      if (scratch.length < bytes) scratch = new Uint8Array(bytes * 2);
      let read: number;
      try {
        read = readSync(this.fd, scratch, 0, bytes, this.offsets[row] ?? 0);
      } catch (err) {
        throw describeFsError(err, "read", this.path);
      }
      if (read !== bytes) throw new Error(`${this.path} is shorter than written`);
      const source =
        flags & WIDE
          ? new Uint32Array(scratch.buffer, scratch.byteOffset, length)
          : new Uint16Array(scratch.buffer, scratch.byteOffset, length);
      ids.set(source, at);
      at += length;
      lengths[i] = length;
      truncated[i] = (flags & TRUNCATED) !== 0;
    }
    return { ids: Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength), lengths, truncated };
  }

  /** Closes and deletes the file. */
  remove(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
    rmSync(this.path, { force: true });
  }
}

/** Little-endian uint32 ids from a protobuf bytes field, which need not be 4-byte aligned. */
function alignedUint32(bytes: Uint8Array): Uint32Array {
  if (bytes.byteLength % 4 !== 0) throw new Error("the server returned ids of a bad size");
  if (bytes.byteOffset % 4 === 0) {
    return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  }
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new Uint32Array(copy.buffer);
}
