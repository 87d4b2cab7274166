/**
 * The shortest decimal that reads back as the same float32: what numpy
 * prints for a float32, and a third shorter than printing it as a double.
 */
export function formatFloat32(value: number): string {
  if (!Number.isFinite(value)) return "null"; // JSON has no NaN; embeddings should never be
  for (let digits = 6; digits < 9; digits++) {
    const candidate = Number(value.toPrecision(digits));
    if (Math.fround(candidate) === value) return String(candidate);
  }
  return String(Number(value.toPrecision(9)));
}
