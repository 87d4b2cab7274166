/**
 * Estimated tokens of a text from its characters, when the server cannot
 * count them: English prose with formulas runs about 4 characters per
 * word-piece token; +2 for the special tokens. Clipped at the model's length.
 */
export function estimateTokens(textChars: ArrayLike<number>, maxLength: number): Uint32Array {
  const out = new Uint32Array(textChars.length);
  const cap = maxLength > 0 ? maxLength : Number.MAX_SAFE_INTEGER;
  for (let i = 0; i < textChars.length; i++) {
    out[i] = Math.min(cap, Math.ceil((textChars[i] ?? 0) / 4) + 2);
  }
  return out;
}
