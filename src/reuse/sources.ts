import {
  closeSync,
  existsSync,
  fstatSync,
  openSync,
  readSync,
  type Stats,
  statSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { readStoredMetadata } from "../checks/metadata.js";
import { ExitError } from "../errors.js";
import { identityDifferences, type ModelIdentity } from "../model/identity.js";
import { hashFile } from "../output/checksum.js";
import { readNpyLayout } from "../output/npy.js";
import { HASH_BYTES } from "./hashes.js";

/** The file beside `<stem>.npy` that holds each row's content hash (src/reuse/hashes.ts). */
export function hashesFileName(fileStem: string): string {
  return `${fileStem}.hashes`;
}

/** An earlier output whose float32 rows this run may copy: checked, of this model's identity. */
export interface ReuseSource {
  readonly dir: string;
  readonly npy: string;
  readonly hashes: string;
  readonly rows: number;
  readonly npySha256: string;
  readonly npyBytes: number;
}

export type SourceVerdict = { ok: true; source: ReuseSource } | { ok: false; why: string };

/**
 * Whether `dir` holds finished outputs of this model made with the same
 * identity (the one the checkpoint compares: src/model/identity.ts), with the
 * float32 .npy and the row hashes. A source that is not of this model is only
 * not used (why says so); one whose files differ from the checksums in its
 * metadata is refused: the user pointed at it, and it was changed.
 */
export function examineSource(
  dir: string,
  fileStem: string,
  identity: ModelIdentity,
  outputDir: string,
): SourceVerdict {
  if (resolve(dir) === resolve(outputDir)) return { ok: false, why: "it is the --output_dir" };
  const metadataName = `${fileStem}.metadata.json`;
  const metadataPath = join(dir, metadataName);
  if (!existsSync(metadataPath)) return { ok: false, why: `no ${metadataName}` };
  const read = readStoredMetadata(metadataPath, metadataName);
  if (!read.ok) return { ok: false, why: read.problem };
  const m = read.metadata;
  const theirs: ModelIdentity = {
    modelId: m.modelName,
    revision: m.revision,
    dim: m.dim,
    dtype: m.dtype,
    maxLength: m.maxLength,
    pooling: m.pooling,
    prefix: m.prefix,
    normalize: m.normalize,
    truncateDim: m.truncateDim,
    quantize: m.quantize,
  };
  const differs = identityDifferences(theirs, identity);
  if (differs.length > 0) return { ok: false, why: `other settings: ${differs.join(", ")}` };
  const npyName = `${fileStem}.npy`;
  const hashesName = hashesFileName(fileStem);
  if (m.outputDtype !== "float32" || !m.outputs.includes(npyName)) {
    return { ok: false, why: `no float32 ${npyName} (output dtype ${m.outputDtype})` };
  }
  if (!m.outputs.includes(hashesName)) {
    return { ok: false, why: `no ${hashesName} (made before row hashes were recorded)` };
  }
  const npy = join(dir, npyName);
  const hashes = join(dir, hashesName);
  const digests = m.files;
  let npyDigest = { sha256: "", bytes: 0 };
  for (const [name, path] of [
    [npyName, npy],
    [hashesName, hashes],
  ] as const) {
    const recorded = digests?.get(name);
    if (!recorded) return { ok: false, why: `${metadataName} records no checksum of ${name}` };
    if (!existsSync(path)) throw refused(dir, `${name} is missing`);
    const actual = hashFile(path);
    if (actual.sha256 !== recorded.sha256 || actual.bytes !== recorded.bytes) {
      throw refused(dir, `${name} does not match the sha256 in ${metadataName}`);
    }
    if (name === npyName) npyDigest = actual;
  }
  const layout = npyShape(npy);
  if (typeof layout === "string" || layout.rows !== m.rows || layout.dim !== identity.dim) {
    throw refused(dir, `${npyName} is not a float32 matrix of ${m.rows} × ${identity.dim}`);
  }
  if (statSync(hashes).size !== m.rows * HASH_BYTES) {
    throw refused(dir, `${hashesName} does not hold ${m.rows} rows`);
  }
  return {
    ok: true,
    source: {
      dir,
      npy,
      hashes,
      rows: m.rows,
      npySha256: npyDigest.sha256,
      npyBytes: npyDigest.bytes,
    },
  };
}

function refused(dir: string, what: string): ExitError {
  return new ExitError(
    `--reuse ${dir} refused: ${what} (the file changed after it was written); run verify on it, or leave it out`,
  );
}

function npyShape(path: string): { rows: number; dim: number; dataOffset: number } | string {
  const fd = openSync(path, "r");
  try {
    const layout = readNpyLayout(fd);
    if (typeof layout === "string") return layout;
    if (layout.descr !== "<f4" || layout.fortranOrder || layout.shape.length !== 2) {
      return "not float32 rows";
    }
    return {
      rows: layout.shape[0] ?? 0,
      dim: layout.shape[1] ?? 0,
      dataOffset: layout.dataOffset,
    };
  } finally {
    closeSync(fd);
  }
}

/**
 * A source's float32 matrix opened read-only for copying rows. Before each
 * read and after it, the file must be the one that was checked (same inode,
 * size, mtime): a source changed or removed during the run stops it.
 */
export class SourceMatrix {
  private readonly fd: number;
  private readonly identity: Stats;
  private readonly dataOffset: number;

  private constructor(
    readonly path: string,
    readonly rowBytes: number,
    bytes: number,
  ) {
    this.fd = openSync(path, "r");
    this.identity = fstatSync(this.fd);
    const shape = npyShape(path);
    const fail = (what: string) => {
      closeSync(this.fd);
      return changed(path, what);
    };
    if (this.identity.size !== bytes) throw fail(`${this.identity.size} bytes, not ${bytes}`);
    if (typeof shape === "string" || shape.dim * 4 !== rowBytes) throw fail("not the same matrix");
    this.dataOffset = shape.dataOffset;
  }

  /** Opens a source recorded in the checkpoint, checking its whole sha256 again. */
  static open(path: string, dim: number, sha256: string, bytes: number): SourceMatrix {
    if (!existsSync(path)) throw changed(path, "it is missing");
    const actual = hashFile(path);
    if (actual.sha256 !== sha256 || actual.bytes !== bytes) {
      throw changed(path, "its sha256 differs from when the run planned it");
    }
    return new SourceMatrix(path, dim * 4, bytes);
  }

  /** Reads the given rows, in order, into one buffer. */
  readRows(rows: Uint32Array): Buffer {
    this.checkUnchanged();
    const out = Buffer.allocUnsafe(rows.length * this.rowBytes);
    for (let i = 0; i < rows.length; i++) {
      const at = this.dataOffset + (rows[i] ?? 0) * this.rowBytes;
      const got = readSync(this.fd, out, i * this.rowBytes, this.rowBytes, at);
      if (got !== this.rowBytes) throw changed(this.path, "it is shorter");
    }
    this.checkUnchanged();
    return out;
  }

  checkUnchanged(): void {
    let now: Stats;
    try {
      now = statSync(this.path);
    } catch {
      throw changed(this.path, "it is missing");
    }
    if (now.ino !== this.identity.ino || now.dev !== this.identity.dev) {
      throw changed(this.path, "replaced by another file");
    }
    if (now.size !== this.identity.size || now.mtimeMs !== this.identity.mtimeMs) {
      throw changed(this.path, "modified");
    }
  }

  close(): void {
    closeSync(this.fd);
  }
}

function changed(path: string, what: string): ExitError {
  return new ExitError(
    `--reuse source ${path} changed during the run (${what}); its rows not yet copied were not marked done: restore it and run the same command to resume, or run with --restart without it`,
  );
}
