import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { InputError } from "../src/errors.js";
import { RowReader } from "../src/input/rows.js";
import { scanInput } from "../src/input/scan.js";
import { corpusSlice, tempDir, writeLines } from "./helpers.js";

const options = { maxTextChars: 1000, skipInvalid: false };
const good = (i: number, text = `paragraph ${i}`) =>
  JSON.stringify({ paper_id: "p1", paragraph_index: i, text });

async function problemOf(lines: (string | Buffer)[]): Promise<InputError> {
  const dir = tempDir("scan");
  const path = join(dir, "in.jsonl");
  writeFileSync(
    path,
    Buffer.concat(lines.map((l) => Buffer.concat([Buffer.from(l), Buffer.from("\n")]))),
  );
  try {
    await scanInput(path, options);
  } catch (err) {
    assert.ok(err instanceof InputError, `expected an InputError, got ${err}`);
    return err;
  }
  assert.fail("the scan accepted bad input");
}

test("each kind of bad line is named with its line number", async () => {
  const cases: [string | Buffer, RegExp][] = [
    ['{"paper_id": "p", "paragraph_index": 1, "text": "unterminated', /malformed JSON/],
    ['{"paper_id": "p", "paragraph_index": 1}', /missing field "text"/],
    [
      '{"paper_id": "p", "paragraph_index": 1, "text": 42}',
      /"text" must be a string, got a number/,
    ],
    ['{"paper_id": "p", "paragraph_index": 1, "text": "   "}', /"text" is empty/],
    ['{"paper_id": "p", "paragraph_index": 1, "text": null}', /"text" must be a string, got null/],
    [
      `{"paper_id": "p", "paragraph_index": 1, "text": "${"x".repeat(1001)}"}`,
      /1001 characters, over the limit of 1000/,
    ],
    ['{"paragraph_index": 1, "text": "t"}', /missing field "paper_id"/],
    [
      '{"paper_id": "p", "paragraph_index": -1, "text": "t"}',
      /"paragraph_index" must be a non-negative integer/,
    ],
    [
      '{"paper_id": "p", "paragraph_index": "3", "text": "t"}',
      /"paragraph_index" must be a non-negative integer, got a string/,
    ],
    ["[1, 2]", /expected a JSON object/],
    [Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), /invalid UTF-8/],
  ];
  for (const [bad, pattern] of cases) {
    const err = await problemOf([good(0), good(1), bad, good(3)]);
    assert.match(err.message, /in\.jsonl:3: /, err.message);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes("\n"), "one line");
  }
});

test("the index finds every row's text by offset; blank lines and CRLF are tolerated", async () => {
  const dir = tempDir("scan-ok");
  const path = join(dir, "in.jsonl");
  const texts = ["first", "ünïcödé ∑ text", "third with \\n escaped", "last without newline"];
  const body = `${good(0, texts[0])}\r\n\n${good(1, texts[1])}\n   \n${good(2, texts[2])}\n${good(3, texts[3])}`;
  writeFileSync(path, body);
  const index = await scanInput(path, options);
  assert.equal(index.rows, 4);
  assert.equal(index.blankLines, 2);
  assert.deepEqual(Array.from(index.lineNumbers), [1, 3, 5, 6]);
  assert.equal(index.sha256, createHash("sha256").update(readFileSync(path)).digest("hex"));
  const reader = new RowReader(index);
  assert.deepEqual(reader.texts([3, 0, 2, 1]), [texts[3], texts[0], texts[2], texts[1]]);
  reader.close();
});

test("--skip_invalid skips bad lines and lists them", async () => {
  const dir = tempDir("scan-skip");
  const path = writeLines(join(dir, "in.jsonl"), [good(0), "not json", good(2), '{"text": 1}']);
  const index = await scanInput(path, { ...options, skipInvalid: true });
  assert.equal(index.rows, 2);
  assert.deepEqual(
    index.skipped.map((s) => s.line),
    [2, 4],
  );
});

test("a missing input file, a directory, or no paragraphs at all are one-line errors", async () => {
  const dir = tempDir("scan-missing");
  await assert.rejects(
    scanInput(join(dir, "nope.jsonl"), options),
    /cannot read input file .*nope\.jsonl: no such file/,
  );
  await assert.rejects(scanInput(dir, options), /is a directory; it needs a regular file/);
  const empty = writeLines(join(dir, "empty.jsonl"), ["", "  "]);
  await assert.rejects(scanInput(empty, options), /has no paragraphs/);
});

test("the real corpus scans cleanly", async () => {
  const dir = tempDir("scan-corpus");
  const lines = corpusSlice(500);
  const path = writeLines(join(dir, "corpus.jsonl"), lines);
  const index = await scanInput(path, { maxTextChars: 100_000, skipInvalid: false });
  assert.equal(index.rows, lines.length);
  const reader = new RowReader(index);
  assert.equal(reader.paragraph(123).text, (JSON.parse(lines[123] ?? "") as { text: string }).text);
  reader.close();
});
