import type {
  Backend,
  BackendError,
  BatchStream,
  HealthReport,
  LoadedModel,
  ServerDescription,
  TokenCounter,
} from "../src/backend/types.js";
import type { RunModel } from "../src/config.js";

/** What an in-memory server states about itself. */
export const MEMORY_DESCRIPTION: ServerDescription = {
  version: "memory",
  device: "cpu",
  dtype: "float32",
  engine: "debug",
  limits: { maxBatchSize: 16, maxBatchTokens: 0, maxMessageBytes: 1 << 20, maxTextChars: 0 },
  capabilities: { countsTokens: false, tokenIds: false },
};

/**
 * A backend in memory, for the phases' and the dispatcher's tests: no
 * network, no Python, no gRPC. Its streams come from `opener` (the test's own
 * fakes); it has the models it is given and no token counter.
 */
export class MemoryBackend implements Backend {
  readonly usesTls = false;
  closed = false;

  constructor(
    readonly target: string,
    private readonly opener: (onBroken: (err: BackendError) => void) => BatchStream = () => {
      throw new Error(`${target}: this in-memory backend opens no streams`);
    },
    private readonly models: readonly LoadedModel[] = [],
    private readonly counter: TokenCounter | null = null,
  ) {}

  async checkHealth(): Promise<HealthReport> {
    return { state: "serving", detail: "" };
  }

  async describe(): Promise<ServerDescription> {
    return MEMORY_DESCRIPTION;
  }

  async loadModel(model: RunModel): Promise<LoadedModel> {
    const found = this.models.find((m) => m.modelId === model.modelId);
    if (!found) throw new Error(`${this.target}: no model ${model.modelId}`);
    return found;
  }

  tokenCounter(): TokenCounter | null {
    return this.counter;
  }

  openStream(onBroken: (err: BackendError) => void): BatchStream {
    return this.opener(onBroken);
  }

  close(): void {
    this.closed = true;
  }
}
