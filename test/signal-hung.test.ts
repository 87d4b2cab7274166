import assert from "node:assert/strict";
import { test } from "node:test";
import { cliArgs } from "./cli-args.js";
import {
  corpusSlice,
  inputDir,
  readLedger,
  sleep,
  spawnCli,
  startServer,
  waitForDone,
} from "./helpers.js";

test("SIGTERM while a batch hangs ends the run at once, not after --batch_timeout, with a consistent checkpoint", async () => {
  const { input, out } = inputDir("signal-hung", corpusSlice(600));
  const server = await startServer(["--engine", "debug"]);
  try {
    const args = cliArgs(input, out, "all-MiniLM-L6-v2", {
      servers: server.target,
      batch_size: 8,
      max_workers: 2,
      checkpoint_interval: 8,
      batch_timeout: 90,
      server_timeout: 90,
    });
    const { child, done } = spawnCli(args);
    await waitForDone(out, 2, done);
    // The server stops answering (a hung GPU): its batches wait for --batch_timeout.
    process.kill(server.pid, "SIGSTOP");
    await sleep(500);
    const sent = Date.now();
    child.kill("SIGTERM");
    // Not a measurement: a bound far below the 90 s the waits would take.
    const result = await Promise.race([done, sleep(20_000).then(() => null)]);
    assert.ok(result, "the run ended within 20 s of SIGTERM");
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /SIGTERM/);
    assert.ok(Date.now() - sent < 20_000);
    console.log(`ended ${Date.now() - sent} ms after SIGTERM`);
    const ledger = readLedger(out);
    assert.ok(ledger.done >= 2 && ledger.done < ledger.batches, "what was done is kept");
  } finally {
    process.kill(server.pid, "SIGCONT");
    await server.stop();
  }
});
