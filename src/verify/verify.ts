import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import type { OpenAIOptions } from "../backend/openai/backend.js";
import { createBackends } from "../backend/select.js";
import type { Backend } from "../backend/types.js";
import { readStoredMetadata, type StoredMetadata } from "../checks/metadata.js";
import { waitHealthy } from "../dispatch/servers.js";
import { ExitError } from "../errors.js";
import { hashFile } from "../output/checksum.js";
import { formatOf, OUTPUT_FORMATS, type OutputFormat } from "../output/formats.js";
import { checkRowHashes } from "../reuse/check-hashes.js";
import type { EmbeddedServerConfig } from "../server/embedded.js";
import { EmbeddedServer } from "../server/embedded.js";
import { jsonlChecker } from "./checkers/jsonl.js";
import { npyChecker } from "./checkers/npy.js";
import { parquetChecker } from "./checkers/parquet.js";
import type { CheckContext, FileChecker } from "./context.js";
import { discoverModels, type FoundModel, unlistedOutputs } from "./discover.js";
import { VerifyInput } from "./input.js";
import { checkSample, modelOf, type SampleSettings } from "./sample.js";

/** One checker per output format (src/output/formats.ts): the compiler asks for a new one's. */
const CHECKERS: Readonly<Record<OutputFormat, FileChecker>> = {
  npy: npyChecker,
  jsonl: jsonlChecker,
  parquet: parquetChecker,
};

export interface VerifyOptions {
  readonly outputDir: string;
  readonly inputFile: string | null;
  /** Null: no re-embedding. */
  readonly sample: SampleSettings | null;
  /** Empty with a sample: the embedded server. */
  readonly servers: readonly string[];
  readonly embedded: EmbeddedServerConfig;
  /** The engine was chosen with --engine; otherwise debug outputs get the debug engine. */
  readonly engineGiven: boolean;
  readonly connection: {
    tls: { caFile: string } | null;
    authToken: string;
    /** For openai: servers (the key from the environment; model ids as served names). */
    openai?: OpenAIOptions | undefined;
  };
  readonly serverTimeoutMs: number;
}

export interface ModelVerdict {
  readonly stem: string;
  readonly ok: boolean;
  readonly problems: readonly string[];
  readonly checked: readonly string[];
}

/** Checks every model in the folder; `report` gets each verdict as soon as it is known. */
export async function verify(
  options: VerifyOptions,
  report: (verdict: ModelVerdict) => void,
): Promise<ModelVerdict[]> {
  const dir = options.outputDir;
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new ExitError(`--output_dir ${dir} is not a folder`);
  }
  const found = discoverModels(dir);
  const input = options.inputFile ? await VerifyInput.open(options.inputFile) : null;
  const verdicts: ModelVerdict[] = [];
  const servers = new ServerPool(options, found, dir);
  try {
    for (const model of found) {
      const verdict = await verifyModel(dir, model, input, servers, options.sample);
      verdicts.push(verdict);
      report(verdict);
    }
  } finally {
    input?.close();
    await servers.close();
  }
  return verdicts;
}

async function verifyModel(
  dir: string,
  model: FoundModel,
  input: VerifyInput | null,
  servers: ServerPool,
  sample: SampleSettings | null,
): Promise<ModelVerdict> {
  const problems: string[] = [];
  const checked: string[] = [];
  const verdict = () => ({ stem: model.stem, ok: problems.length === 0, problems, checked });
  const metadataPath = join(dir, model.metadataName);
  if (!existsSync(metadataPath)) {
    problems.push(
      `${model.metadataName} is missing (the model is in ${model.seenIn}): the run did not finish, or the file was deleted`,
    );
    return verdict();
  }
  const read = readStoredMetadata(metadataPath, model.metadataName);
  if (!read.ok) {
    problems.push(read.problem);
    return verdict();
  }
  const metadata = read.metadata;
  const files = outputFiles(metadata, model.metadataName);
  problems.push(...checkDigests(dir, metadata, files));
  problems.push(...unlistedOutputs(dir, model.stem, files));
  if (problems.length === 0) checked.push("checksums");

  const expected = input ? input.rowsFor(metadata.skippedLines) : null;
  if (input && expected) {
    if (input.sha256 !== metadata.inputSha256) {
      problems.push(
        `${expected.file} is not the input these outputs were made from (its sha256 differs from the metadata's input_sha256)`,
      );
    }
    if (expected.count !== metadata.rows) {
      problems.push(
        `${expected.file} has ${expected.count} paragraphs (after the lines the run skipped), the metadata says ${metadata.rows}`,
      );
    }
  }

  const ctx: CheckContext = { dir, metadata, input: expected, reference: null };
  try {
    // In the formats' order: a .npy first, so that the others compare their vectors with it.
    for (const format of OUTPUT_FORMATS) {
      for (const name of files) {
        if (formatOf(name) !== format || !existsSync(join(dir, name))) continue;
        const result = await CHECKERS[format].check(name, ctx);
        problems.push(...result.problems);
        if (result.checked) checked.push(result.checked);
      }
    }
    const hashes = files.find((f) => f === `${model.stem}.hashes` && existsSync(join(dir, f)));
    if (hashes && expected) {
      const problem = checkRowHashes(join(dir, hashes), expected, metadata.prefix);
      if (problem) problems.push(problem);
      else checked.push(`${hashes} ${expected.count} rows, each the hash of its input`);
    }
    const unread = files.filter((f) => formatOf(f) === null && !(f === hashes && expected));
    if (unread.length > 0) checked.push(`${unread.join(", ")} by checksum only`);
    // Re-embedding is only meaningful against sound files of this very input.
    if (sample && expected && problems.length > 0) {
      checked.push("no sample: the files have problems");
    } else if (sample && expected) {
      const jsonl = files.find((f) => formatOf(f) === "jsonl" && existsSync(join(dir, f))) ?? null;
      for (const connection of await servers.connections()) {
        try {
          const result = await checkSample(
            ctx,
            expected,
            connection,
            modelOf(metadata, model.stem),
            sample,
            jsonl,
          );
          if (result.problem) problems.push(result.problem);
          else checked.push(result.summary);
        } catch (err) {
          const why = err instanceof Error ? err.message : String(err);
          problems.push(`sample on ${connection.target}: ${why}`);
        }
      }
    }
  } finally {
    ctx.reference?.close();
  }
  return verdict();
}

/** The model's output files other than the metadata: those it has digests of, and those it lists. */
function outputFiles(metadata: StoredMetadata, metadataName: string): string[] {
  const names = new Set([...(metadata.files?.keys() ?? []), ...metadata.outputs]);
  names.delete(metadataName);
  return [...names].sort();
}

/** Every file is there, of the recorded size and sha256. */
function checkDigests(dir: string, metadata: StoredMetadata, files: readonly string[]): string[] {
  const problems: string[] = [];
  if (!metadata.files) {
    return ["the metadata records no checksums (written by an embed-multi before they were added)"];
  }
  for (const name of files) {
    const path = join(dir, name);
    const recorded = metadata.files.get(name);
    if (!existsSync(path)) {
      problems.push(`${name} is missing (the metadata lists it)`);
      continue;
    }
    if (!recorded) {
      problems.push(`${name}: the metadata lists it among the outputs but records no checksum`);
      continue;
    }
    const actual = hashFile(path);
    if (actual.bytes !== recorded.bytes) {
      const how = actual.bytes < recorded.bytes ? "truncated" : "grown";
      problems.push(`${name}: ${actual.bytes} bytes, the metadata says ${recorded.bytes} (${how})`);
    } else if (actual.sha256 !== recorded.sha256) {
      problems.push(
        `${name}: sha256 differs from the metadata (the file changed after it was written)`,
      );
    }
  }
  return problems;
}

/** The servers to embed the sample on, connected on first use; the embedded one if none were given. */
class ServerPool {
  private opened: Backend[] | null = null;
  private embedded: EmbeddedServer | null = null;

  constructor(
    private readonly options: VerifyOptions,
    private readonly found: readonly FoundModel[],
    private readonly dir: string,
  ) {}

  async connections(): Promise<Backend[]> {
    if (this.opened) return this.opened;
    let targets = this.options.servers;
    if (targets.length === 0) {
      this.embedded = await EmbeddedServer.start(
        this.embeddedConfig(),
        this.options.sample?.device ?? "",
      );
      targets = [this.embedded.target];
    }
    // Chosen from --servers as the run chooses them.
    this.opened = await createBackends(targets, {
      ...this.options.connection,
      maxMessageBytes: 256 * 1024 * 1024,
    });
    for (const connection of this.opened) {
      await waitHealthy(connection, this.options.serverTimeoutMs);
    }
    return this.opened;
  }

  /** Outputs of the debug engine are checked against the debug engine, at their dimension. */
  private embeddedConfig(): EmbeddedServerConfig {
    const base = this.options.embedded;
    if (this.options.engineGiven) return base;
    const first = this.found
      .map((m) => readStoredMetadata(join(this.dir, m.metadataName), m.metadataName))
      .find((r) => r.ok);
    if (first?.ok && first.metadata.pooling === "debug") {
      return { ...base, engine: "debug", debugDim: first.metadata.dim };
    }
    return base;
  }

  async close(): Promise<void> {
    for (const connection of this.opened ?? []) connection.close();
    await this.embedded?.stop();
  }
}
