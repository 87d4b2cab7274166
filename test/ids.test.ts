import assert from "node:assert/strict";
import { test } from "node:test";
import { indexProblem, paperIdJson, paperIdText, scanIds } from "../src/input/ids.js";
import { checkLine } from "../src/input/validate.js";

const scan = (line: string) => scanIds(Buffer.from(line, "utf8"));

test("the scanner returns the raw JSON text of the top-level ids", () => {
  assert.deepEqual(
    scan('{"paper_id":12345678901234567890,"paragraph_index":9007199254740993,"text":"x"}'),
    {
      paperId: "12345678901234567890",
      paragraphIndex: "9007199254740993",
    },
  );
  assert.deepEqual(
    scan(' { "text" : "a, \\"b\\" }", "paper_id" : 1e999 , "paragraph_index" : 0 } '),
    {
      paperId: "1e999",
      paragraphIndex: "0",
    },
  );
  // Nested objects with the same keys do not count; the last top-level key wins, as in JSON.parse.
  assert.deepEqual(
    scan(
      '{"meta":{"paper_id":1,"x":[{"paragraph_index":2}]},"paper_id":"a\\u00e9","paragraph_index":3,"paper_id":2212.10}',
    ),
    { paperId: "2212.10", paragraphIndex: "3" },
  );
  // An escaped key is the same key to JSON.parse.
  assert.deepEqual(scan('{"paper\\u005fid":"p","paragraph_index":4}'), {
    paperId: '"p"',
    paragraphIndex: "4",
  });
  assert.deepEqual(scan('{"paper_id":"é ü 漢字","paragraph_index":5}'), {
    paperId: '"é ü 漢字"',
    paragraphIndex: "5",
  });
  assert.equal(scan('{"paper_id":"p"}'), null);
  assert.equal(scan("[1,2]"), null);
  assert.equal(scan('{"paper_id":"p","paragraph_index":1'), null);
});

test("a paragraph_index must be digits only and fit int64", () => {
  for (const ok of ["0", "7", "9007199254740993", "9223372036854775807"])
    assert.equal(indexProblem(ok), null, ok);
  for (const bad of ["-0", "01", "5.0", "1e2", "-1", "9223372036854775808", '"3"']) {
    assert.notEqual(indexProblem(bad), null, bad);
  }
  const checked = checkLine(Buffer.from('{"paper_id":"p","paragraph_index":1.0,"text":"t"}'), 100);
  assert.equal(checked.ok, false);
  assert.match(
    checked.ok ? "" : checked.problem,
    /must be a non-negative integer written in digits, got 1\.0/,
  );
});

test("ids are written as in the input: numbers as their text, strings re-serialized", () => {
  assert.equal(paperIdJson("12345678901234567890"), "12345678901234567890");
  assert.equal(paperIdJson("2212.10"), "2212.10");
  assert.equal(paperIdJson('"a\\u00e9\\/"'), '"aé/"');
  assert.equal(paperIdText('"a\\u00e9"'), "aé");
  assert.equal(paperIdText("1e999"), "1e999");
});
