import assert from "node:assert/strict";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import { corpusSlice, inputDir, runCli, runVerify, testEnv, withServer } from "./helpers.js";

test("all-MiniLM-L6-v2 outputs verify, and re-embed equal on the same server, not on a perturbed one", async () => {
  // Paragraphs of several lengths, some past 256 tokens (truncated).
  const { input, out } = inputDir("verify-real", corpusSlice(24, 100));
  await withServer(["--threads", "2"], async (server) => {
    const run = await runCli(
      cliArgs(input, out, "all-MiniLM-L6-v2", { batch_size: 8, servers: server.target }),
    );
    assert.equal(run.code, 0, run.stderr);

    const plain = await runVerify(["--output_dir", out, "--input_file", input]);
    assert.equal(plain.code, 0, plain.stdout + plain.stderr);
    assert.match(
      plain.stdout,
      /^ok {4}all-MiniLM-L6-v2: checksums; all-MiniLM-L6-v2\.npy \(24, 384\) float32; all-MiniLM-L6-v2\.jsonl 24 lines, equal to the \.npy, in input order; all-MiniLM-L6-v2\.hashes 24 rows, each the hash of its input$/m,
    );

    const args = ["--output_dir", out, "--input_file", input, "--sample", "8", "--seed", "5"];
    const same = await runVerify([...args, "--servers", server.target]);
    assert.equal(same.code, 0, same.stdout + same.stderr);
    const cosine = /8 rows \(seed 5\), worst cosine (\d\.\d+)/.exec(same.stdout);
    assert.ok(cosine, same.stdout);
    assert.ok(Number(cosine[1]) >= 0.999, same.stdout);

    await withServer(
      ["--threads", "2"],
      async (perturbed) => {
        const off = await runVerify([...args, "--servers", perturbed.target]);
        assert.equal(off.code, 1, off.stdout + off.stderr);
        assert.match(
          off.stdout,
          /^FAIL {2}all-MiniLM-L6-v2: sample on \S+: row \d+ \(input line \d+\) has cosine 0\.\d+ with the stored vector, below --tolerance 0\.999 \(8 rows, seed 5\)/m,
        );
      },
      testEnv(),
      { perturb: 0.5 },
    );
  });
});
