/** How an OpenAI-compatible server knows a model: not part of what makes its vectors. */
export interface ModelServing {
  /** The name sent as `model`; "" = the model id. */
  readonly servedModelName: string;
  /** A tokenizer.json (or a folder holding one) for planning; "" = none given. */
  readonly tokenizer: string;
  /** "float" to never ask for base64 (a proxy that mangles it); "" = base64 where the server gives it. */
  readonly encodingFormat: "" | "float";
}

/** The run's OpenAI-compatible servers: what they share (validated by the run's config). */
export interface OpenAIRunConfig {
  /** OPENAI_API_KEY or EMBED_AUTH_TOKEN; "" = none. Never printed. */
  readonly apiKey: string;
  /** Inputs per request at most (OpenAI's limit: 2048). */
  readonly maxRequestInputs: number;
  /** Tokens per request at most (OpenAI's limit: 300,000). */
  readonly maxRequestTokens: number;
  /** served_model_name and tokenizer of the models that set them, by alias. */
  readonly serving: ReadonlyMap<string, ModelServing>;
}
