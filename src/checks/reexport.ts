import { basename } from "node:path";
import { hashFile } from "../output/checksum.js";
import type { OutputPaths } from "../output/finalize.js";
import { NpyMatrixFile } from "../output/npy.js";
import { readStoredMetadata } from "./metadata.js";

/** Whether a finished model's outputs can be derived again without embedding, and if not, why. */
export type ReexportSource = { readonly ok: true } | { readonly ok: false; readonly why: string };

/**
 * A finished model whose float32 `<alias>.npy` is intact holds every vector
 * the run made: any other format or dtype is derived from it, byte for byte
 * as the run itself would have. Intact means the metadata (written last) lists
 * it as a float32 output, and its shape, size and sha256 are the ones the
 * metadata recorded. A compact run keeps no float32 copy (see README,
 * Outputs): its vectors cannot be recovered from int8 or bits.
 */
export function reexportSource(paths: OutputPaths, rows: number, dim: number): ReexportSource {
  const read = readStoredMetadata(paths.metadata, basename(paths.metadata));
  if (!read.ok) return { ok: false, why: "its metadata is missing or unreadable" };
  const meta = read.metadata;
  if (meta.outputDtype !== "float32") {
    return { ok: false, why: `the run wrote ${meta.outputDtype}, and no float32 copy is kept` };
  }
  const name = basename(paths.npy);
  const listed = meta.files?.get(name);
  if (!meta.outputs.includes(name) || !listed) {
    return { ok: false, why: `the run wrote no ${name}` };
  }
  const matrix = NpyMatrixFile.reopen(paths.npy, rows, dim);
  if (!matrix) return { ok: false, why: `${name} is missing or not of shape (${rows}, ${dim})` };
  matrix.close();
  const found = hashFile(paths.npy);
  if (found.bytes !== listed.bytes || found.sha256 !== listed.sha256) {
    return { ok: false, why: `${name} does not match the checksum in its metadata` };
  }
  return { ok: true };
}
