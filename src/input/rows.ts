import { createHash } from "node:crypto";
import { closeSync, fstatSync, openSync, readSync, type Stats, statSync } from "node:fs";
import { describeFsError, ExitError } from "../errors.js";
import { type RawIds, scanIds } from "./ids.js";
import type { CorpusIndex } from "./scan.js";
import { checkLine, type Paragraph } from "./validate.js";

/** Reads between two checks that the input is still the file that was scanned. */
const READS_PER_CHECK = 1024;
const HASH_CHUNK = 1 << 20;
const SHORTER = "the file is shorter";

/** The input file was edited, truncated or replaced while the run was reading it. */
export class InputChangedError extends ExitError {
  constructor(file: string, what: string) {
    super(
      `${file} changed during the run (${what}); nothing was marked complete: restore the file and run the same command to resume, or run with --restart to embed the new contents`,
    );
  }
}

/**
 * Reads paragraphs back from the input by row number, through the index made
 * by the scan. The run reads the file twice (scan, then texts and JSONL), so
 * every read checks that it is still the scanned file: same inode, size and
 * mtime, and before the metadata is written, the same sha256.
 */
export class RowReader {
  private readonly fd: number;
  private scratch = Buffer.alloc(64 * 1024);
  private readonly identity: Stats;
  private readsSinceCheck = 0;
  private hashVerified = false;

  constructor(private readonly index: CorpusIndex) {
    try {
      this.fd = openSync(index.file, "r");
      this.identity = fstatSync(this.fd);
    } catch (err) {
      throw describeFsError(err, "read input file", index.file);
    }
    if (this.identity.size !== index.size || this.identity.mtimeMs !== index.mtimeMs) {
      closeSync(this.fd);
      throw new InputChangedError(index.file, describeChange(index, this.identity));
    }
  }

  paragraph(row: number): Paragraph {
    const bytes = this.rowBytes(row);
    const checked = bytes ? checkLine(bytes, Number.MAX_SAFE_INTEGER) : null;
    if (!checked?.ok) throw this.changedAt(row, checked ? checked.problem : SHORTER);
    return checked.paragraph;
  }

  /**
   * The raw JSON text of a row's ids, for the outputs: no full parse of the
   * line (its text is not needed), which keeps exports fast.
   */
  ids(row: number): RawIds {
    const bytes = this.rowBytes(row);
    const ids = bytes ? scanIds(bytes) : null;
    if (!ids) throw this.changedAt(row, bytes ? "no paper_id and paragraph_index" : SHORTER);
    return ids;
  }

  texts(rows: ArrayLike<number>): string[] {
    this.checkUnchanged();
    const out = new Array<string>(rows.length);
    for (let i = 0; i < rows.length; i++) out[i] = this.paragraph(rows[i] ?? 0).text;
    return out;
  }

  /** Same inode, size and mtime as at the scan: cheap, done at every batch and every 1,024 rows. */
  checkUnchanged(): void {
    this.readsSinceCheck = 0;
    let now: Stats;
    try {
      now = statSync(this.index.file);
    } catch (err) {
      throw new InputChangedError(this.index.file, describeFsError(err, "read", "it").message);
    }
    if (now.ino !== this.identity.ino || now.dev !== this.identity.dev) {
      throw new InputChangedError(this.index.file, "replaced by another file");
    }
    if (now.size !== this.index.size || now.mtimeMs !== this.index.mtimeMs) {
      throw new InputChangedError(this.index.file, describeChange(this.index, now));
    }
  }

  /**
   * The whole file hashed again and compared with the scan's sha256: an edit
   * that kept size and mtime is caught before any metadata claims the outputs
   * come from that file. Hashed once per run.
   */
  verifyUnchanged(): void {
    this.checkUnchanged();
    if (this.hashVerified) return;
    const hash = createHash("sha256");
    const chunk = Buffer.alloc(HASH_CHUNK);
    let position = 0;
    for (;;) {
      const got = readSync(this.fd, chunk, 0, chunk.length, position);
      if (got === 0) break;
      hash.update(chunk.subarray(0, got));
      position += got;
    }
    if (hash.digest("hex") !== this.index.sha256) {
      throw new InputChangedError(this.index.file, "its contents differ from the scan's sha256");
    }
    this.hashVerified = true;
  }

  close(): void {
    closeSync(this.fd);
  }

  /** A row's bytes (in a scratch buffer reused by the next read), or null where the file ends first. */
  private rowBytes(row: number): Buffer | null {
    if (++this.readsSinceCheck >= READS_PER_CHECK) this.checkUnchanged();
    const length = this.index.byteLengths[row] ?? 0;
    if (this.scratch.length < length) this.scratch = Buffer.alloc(length * 2);
    const bytes = this.scratch.subarray(0, length);
    const got = readSync(this.fd, bytes, 0, length, this.index.offsets[row] ?? 0);
    return got === length ? bytes : null;
  }

  /** The error for a row that no longer reads as scanned: the file's change when it shows one. */
  private changedAt(row: number, what: string): InputChangedError {
    this.checkUnchanged(); // throws, naming the change (size, mtime), when there is one
    return new InputChangedError(this.index.file, `line ${this.index.lineNumbers[row]}: ${what}`);
  }
}

function describeChange(index: CorpusIndex, now: Stats): string {
  if (now.size !== index.size) return `size ${index.size} → ${now.size} bytes`;
  return "modified: its mtime moved";
}
