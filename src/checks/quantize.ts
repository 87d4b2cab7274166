import type { LoadedModel } from "../backend/types.js";

/** What these checks read of a model of the run. */
interface Quantized {
  readonly alias: string;
  readonly quantize: string;
}

import { ExitError, ServerError } from "../errors.js";

/** A quantized model strays further from float32 than --quantize_min_cosine allows. */
export class FidelityError extends ExitError {}

/**
 * A server must have quantized as asked, and said how close it stayed: one that predates
 * --quantize ignores the field (proto3) and would embed in float32 under an int8 label.
 */
export function checkQuantized(target: string, model: Quantized, info: LoadedModel): void {
  if (info.quantize === model.quantize && (model.quantize === "none" || info.quantizeFidelity)) {
    return;
  }
  throw new ServerError(
    `server ${target}: model "${model.alias}" was asked for quantize ${model.quantize} but reports quantize ${info.quantize}${info.quantizeFidelity ? "" : " and no fidelity"}; update the inference server`,
  );
}

/**
 * --quantize int8: every server's quantized copy of every model keeps each calibration
 * paragraph's vector within `minCosine` of its float32 one; else the run stops here,
 * before a batch goes to it.
 */
export function checkFidelity(
  sessions: readonly { target: string; models: ReadonlyMap<string, LoadedModel> }[],
  models: readonly Quantized[],
  minCosine: number,
): void {
  for (const model of models) {
    if (model.quantize === "none") continue;
    for (const session of sessions) {
      const fidelity = session.models.get(model.alias)?.quantizeFidelity;
      if (!fidelity || fidelity.minCosine >= minCosine) continue;
      throw new FidelityError(
        `model "${model.alias}": ${model.quantize} on server ${session.target} keeps a lowest cosine to float32 of ${fidelity.minCosine.toFixed(6)} (mean ${fidelity.meanCosine.toFixed(6)}) on its ${fidelity.rows} calibration paragraphs, under --quantize_min_cosine ${minCosine}; the run stops before embedding with it (lower the bound, or run without --quantize)`,
      );
    }
  }
}
