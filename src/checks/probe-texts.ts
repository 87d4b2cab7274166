import { createHash } from "node:crypto";

/**
 * Sentences joined into a text of about 1,400 words: past the 256 and 512
 * token limits of every model in the registry, so the probe covers
 * truncation (a server that truncates elsewhere computes other vectors).
 */
function longText(): string {
  const topics = [
    "the measurement of thermal conductivity in layered materials",
    "a proof that the spectral gap closes at the critical coupling",
    "training curves of transformer language models at several scales",
    "the survey of galaxy clusters and the weak lensing signal",
    "stochastic gradient descent with momentum on non-convex losses",
  ];
  const sentences: string[] = [];
  for (let i = 0; i < 60; i++) {
    const topic = topics[i % topics.length] ?? "";
    sentences.push(
      `Section ${i + 1} returns to ${topic}, and the reader who has followed the argument so far will see that each step rests on the one before it.`,
    );
  }
  return sentences.join(" ");
}

/**
 * The fixed texts every server embeds before it gets work (issue 12): short,
 * truncated, non-ASCII (accents, CJK, emoji, right-to-left), code-like and
 * numeric. Changing them changes PROBE_SET_ID, and stored probe vectors of
 * another set are not compared with these.
 */
export const PROBE_TEXTS: readonly string[] = Object.freeze([
  "Hello.",
  "We study the convergence of stochastic gradient descent for overparameterized neural networks and show a linear rate under a Polyak-Łojasiewicz condition.",
  "The cat sat on the mat.",
  longText(),
  "Die Ergebnisse zeigen eine signifikante Verbesserung gegenüber früheren Méthodes — à vérifier.",
  "本文提出了一种新的图神经网络方法，用于分子性质预测。実験結果は有望である。",
  "Results 🚀🔥 are better than expected 😅 (see Fig. 3) ✅",
  "def f(x):\n    return x ** 2 + 3 * x - 1  # a quadratic\n\nprint(f(2))",
  "SELECT paper_id, COUNT(*) FROM paragraphs WHERE text LIKE '%graph%' GROUP BY paper_id;",
  "3.14159 2.71828 1.41421 6.02214076e23 -273.15 42 0x1F 1,000,000",
  "$\\mathcal{L}(\\theta) = -\\sum_{i=1}^{N} \\log p_\\theta(y_i \\mid x_i)$",
  "שלום עולם — مرحبا بالعالم — Привет, мир",
  "a",
]);

/** Names this exact set of probe texts, so stored vectors are only compared with their own set. */
export const PROBE_SET_ID: string = createHash("sha256")
  .update(JSON.stringify(PROBE_TEXTS))
  .digest("hex")
  .slice(0, 16);
