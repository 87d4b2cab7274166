import { readCorpusLines, seededRandom } from "./helpers.js";

/** A paragraph of a derived corpus: its text decides whether an earlier output holds it. */
interface Row {
  readonly paperId: string;
  readonly index: number;
  readonly text: string;
}

/**
 * Corpus versions derived deterministically from the fixture, every text
 * distinct: v1 = `size` paragraphs (the fixture's distinct texts, then the
 * same with " (variant k)"); v2 = v1 with `edited` texts changed, `deleted`
 * rows removed, `added` new ones, and the whole shuffled (seeded).
 */
export function corpusVersions(
  size: number,
  edited: number,
  deleted: number,
  added: number,
): { v1: string[]; v2: string[]; changed: number } {
  const seen = new Set<string>();
  const base: { paperId: string; text: string }[] = [];
  for (const line of readCorpusLines()) {
    const p = JSON.parse(line) as { paper_id: string; text: string };
    if (seen.has(p.text)) continue;
    seen.add(p.text);
    base.push({ paperId: p.paper_id, text: p.text });
  }
  const variant = (i: number): Row => {
    const b = base[i % base.length] ?? { paperId: "x", text: "x" };
    const k = Math.floor(i / base.length);
    return { paperId: b.paperId, index: i, text: k === 0 ? b.text : `${b.text} (variant ${k})` };
  };
  const v1 = Array.from({ length: size }, (_, i) => variant(i));
  const random = seededRandom(20);
  const order = shuffle(
    Array.from({ length: size }, (_, i) => i),
    random,
  );
  const gone = new Set(order.slice(0, deleted));
  const changed = new Set(order.slice(deleted, deleted + edited));
  const kept = v1
    .filter((r) => !gone.has(r.index))
    .map((r) => (changed.has(r.index) ? { ...r, text: `${r.text} (edited)` } : r));
  const fresh = Array.from({ length: added }, (_, i) => variant(size + i));
  const v2 = shuffle([...kept, ...fresh], random);
  return { v1: v1.map(line), v2: v2.map(line), changed: edited + added };
}

/** `lines` where `share` of the rows repeat the text of an earlier row (seeded). */
export function withDuplicates(lines: readonly string[], share: number): string[] {
  const random = seededRandom(30);
  const count = lines.length;
  const copies = Math.round(count * share);
  const rows = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  const distinct = count - copies;
  return rows.map((row, i) => {
    if (i < distinct) return JSON.stringify(row);
    const twin = rows[Math.floor(random() * distinct)] ?? row;
    return JSON.stringify({ ...row, text: twin.text });
  });
}

function line(r: Row): string {
  return JSON.stringify({ paper_id: r.paperId, paragraph_index: r.index, text: r.text });
}

function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const a = items[i] as T;
    items[i] = items[j] as T;
    items[j] = a;
  }
  return items;
}
