import { HASH_BYTES } from "./hashes.js";

/**
 * The rows of a run by content hash, without any text: an open-addressing
 * table of row numbers over the run's hash buffer (N × 16 bytes). The table
 * has a power of two ≥ 2N slots of 4 bytes, so the whole index is 24–32
 * bytes a row (10 M rows: about 320 MB, in typed arrays outside the JS heap).
 * The first row with a hash is its leader.
 */
export class HashIndex {
  private readonly slots: Int32Array;
  private readonly mask: number;

  constructor(private readonly hashes: Buffer) {
    const rows = hashes.length / HASH_BYTES;
    let size = 2;
    while (size < rows * 2) size *= 2;
    this.slots = new Int32Array(size).fill(-1);
    this.mask = size - 1;
  }

  /** Adds a row (in row order); returns its leader: itself, or the first row with its hash. */
  add(row: number): number {
    let slot = this.slotOf(this.hashes, row * HASH_BYTES);
    for (;;) {
      const held = this.slots[slot] ?? -1;
      if (held < 0) {
        this.slots[slot] = row;
        return row;
      }
      if (sameHash(this.hashes, held * HASH_BYTES, this.hashes, row * HASH_BYTES)) return held;
      slot = (slot + 1) & this.mask;
    }
  }

  /** The leader of the rows whose hash is `source[offset..offset+16]`, or -1. */
  find(source: Uint8Array, offset: number): number {
    let slot = this.slotOf(source, offset);
    for (;;) {
      const held = this.slots[slot] ?? -1;
      if (held < 0) return -1;
      if (sameHash(this.hashes, held * HASH_BYTES, source, offset)) return held;
      slot = (slot + 1) & this.mask;
    }
  }

  private slotOf(bytes: Uint8Array, offset: number): number {
    // The bytes of a sha256 are uniform: four of them are as good a slot as any.
    const word =
      ((bytes[offset] ?? 0) |
        ((bytes[offset + 1] ?? 0) << 8) |
        ((bytes[offset + 2] ?? 0) << 16) |
        ((bytes[offset + 3] ?? 0) << 24)) >>>
      0;
    return word & this.mask;
  }
}

function sameHash(a: Uint8Array, ao: number, b: Uint8Array, bo: number): boolean {
  for (let i = 0; i < HASH_BYTES; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}
