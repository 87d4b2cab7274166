import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import type { LoadedModel } from "../src/backend/types.js";
import { checkSameModels, checkSameWeights } from "../src/checkpoint/compat.js";
import { Ledger } from "../src/checkpoint/ledger.js";
import { ledgerModelOf } from "../src/checkpoint/model-row.js";
import { modelSpec } from "../src/config/registry.js";
import type { RunConfig, RunModel } from "../src/config.js";
import type { CorpusIndex } from "../src/input/scan.js";
import { MODEL_SETTINGS, type ModelSetting } from "../src/model/identity.js";
import { buildMetadata } from "../src/output/metadata.js";
import { tempDir } from "./helpers.js";

// A setting that changes the vectors is one entry in MODEL_SETTINGS (plus its
// column in a schema step, and the proto): this test adds a fake one and follows
// it through the checkpoint, the resume refusals and the metadata.
const FAKE: ModelSetting = {
  label: "fake_setting",
  column: "fake_setting",
  kind: "int",
  asked: "same",
};

function withFakeSetting(body: () => void): void {
  const settings = MODEL_SETTINGS as Record<string, ModelSetting>;
  settings.fakeSetting = FAKE;
  try {
    body();
  } finally {
    delete settings.fakeSetting;
  }
}

test("a new model setting flows through the checkpoint, resume refusal and metadata", () => {
  const path = join(tempDir("model-setting"), "c.sqlite");
  Ledger.open(path).close();
  // The schema step the new setting would add (src/checkpoint/schema.ts).
  const db = new Database(path);
  db.exec("ALTER TABLE models ADD COLUMN fake_setting INTEGER NOT NULL DEFAULT 0");
  db.close();

  withFakeSetting(() => {
    const model = { ...modelSpec("m", "org/m"), fileStem: "m", fakeSetting: 3 } as RunModel;
    const loaded = {
      modelId: "org/m",
      revision: "abc",
      dim: 4,
      dtype: "float32",
      normalize: false,
      prefix: "",
      maxLength: 128,
      pooling: "mean",
      truncateDim: 0,
      quantize: "none",
      fakeSetting: 3,
      modelKey: "k",
      device: "cpu",
    } as LoadedModel;
    const ledger = Ledger.open(path);
    ledger.addModel(ledgerModelOf(model, loaded, 0, { batchSize: 8, maxBatchTokens: 0 }), []);
    ledger.close();

    const again = Ledger.open(path);
    const stored = again.models()[0];
    again.close();
    assert.ok(stored);
    const raw = new Database(path, { readonly: true });
    assert.deepEqual(raw.prepare("SELECT fake_setting FROM models").get(), { fake_setting: 3 });
    raw.close();
    assert.equal((stored as unknown as Record<string, unknown>).fakeSetting, 3);
    assert.equal((stored.requested as unknown as Record<string, unknown>).fakeSetting, 3);

    // Resume: the same request passes, another is refused naming the setting.
    checkSameModels([stored], [model]);
    assert.throws(
      () => checkSameModels([stored], [{ ...model, fakeSetting: 4 } as RunModel]),
      /settings changed since the checkpoint \(fake_setting 3 → 4\)/,
    );
    checkSameWeights(stored, loaded);
    assert.throws(
      () => checkSameWeights(stored, { ...loaded, fakeSetting: 5 } as LoadedModel),
      /differs from the one in the checkpoint \(fake_setting 3 → 5\)/,
    );

    const metadata = buildMetadata({
      config: {
        batchSize: 8,
        maxBatchTokens: 0,
        outputDtype: "float32",
        toolVersion: "0",
      } as RunConfig,
      model,
      ledgerModel: stored,
      totals: {
        batches: 0,
        doneBatches: 0,
        rows: 0,
        doneRows: 0,
        tokens: 0,
        truncated: 0,
        realTokens: 0,
        paddedTokens: 0,
        servers: [],
        retriedBatches: 0,
        copies: 0,
        doneCopies: 0,
        reusedRows: 0,
        reusedFrom: [],
        deduplicatedRows: 0,
        spotFailures: 0,
        spotRedoneBatches: 0,
      },
      run: { attempts: 1, processingSeconds: 0, createdAt: "t" },
      corpus: {
        file: "in",
        sha256: "ff",
        size: 0,
        rows: 0,
        skipped: [],
        blankLines: 0,
      } as unknown as CorpusIndex,
      outputs: [],
      files: [],
      ranges: null,
      jsonlSeconds: null,
    });
    const keys = Object.keys(metadata);
    assert.equal((metadata as unknown as Record<string, unknown>).fake_setting, 3);
    // After the settings before it, before the run's totals.
    assert.equal(keys.indexOf("fake_setting"), keys.indexOf("quantize") + 1);
    assert.deepEqual(keys.slice(0, 2), ["model_name", "embedding_dim"]);
  });
});
