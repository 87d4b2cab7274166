/**
 * The models of the specification with the settings that change their
 * numbers. Anything else given to --models is taken as a Hugging Face id
 * with plain settings (a custom model); a config file can add or override
 * entries.
 */
export interface ModelSpec {
  /** The name the user gives; outputs are named after it. */
  readonly alias: string;
  /** Hugging Face id, or a folder in the server's model directory. */
  readonly modelId: string;
  /** Empty: whatever the server's cache or model directory holds. */
  readonly revision: string;
  /** Prepended to every text by the server. */
  readonly prefix: string;
  readonly normalize: boolean;
  /** 0: the model's own maximum sequence length. */
  readonly maxLength: number;
  /** "" or "auto": float16 on CUDA, float32 on CPU. */
  readonly dtype: string;
  /** Matryoshka: keep the first N dimensions, before normalizing; 0 = all of them. */
  readonly truncateDim: number;
  /** "none", or "int8": static int8 on the server's CPU engine, calibrated on this run's texts. */
  readonly quantize: string;
}

const base = {
  revision: "",
  prefix: "",
  normalize: false,
  maxLength: 0,
  dtype: "",
  truncateDim: 0,
  quantize: "none",
};

/** A model's spec: the defaults, with `settings` over them. */
export function modelSpec(
  alias: string,
  modelId: string,
  settings: Partial<ModelSpec> = {},
): ModelSpec {
  return { ...base, alias, modelId, ...settings };
}

export const BUILTIN_MODELS: readonly ModelSpec[] = [
  modelSpec("bge-large-en-v1.5", "BAAI/bge-large-en-v1.5", { normalize: true, maxLength: 512 }),
  modelSpec("bge-base-en-v1.5", "BAAI/bge-base-en-v1.5", { normalize: true, maxLength: 512 }),
  modelSpec("bge-small-en-v1.5", "BAAI/bge-small-en-v1.5", { normalize: true, maxLength: 512 }),
  modelSpec("e5-large-v2", "intfloat/e5-large-v2", { prefix: "passage: ", maxLength: 512 }),
  modelSpec("e5-base-v2", "intfloat/e5-base-v2", { prefix: "passage: ", maxLength: 512 }),
  modelSpec("e5-small-v2", "intfloat/e5-small-v2", { prefix: "passage: ", maxLength: 512 }),
  modelSpec("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
  modelSpec("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"),
  modelSpec(
    "paraphrase-multilingual-MiniLM-L12-v2",
    "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
  ),
];

/** A Hugging Face id: `name` or `org/name`, nothing that can climb out of a folder. */
export const MODEL_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)?$/;

/** The hub's limit on an organisation or repository name (the server checks the same). */
export const MAX_MODEL_ID_PART = 96;

export function isValidModelId(id: string): boolean {
  return (
    MODEL_ID_PATTERN.test(id) &&
    !id.split("/").some((part) => part.includes("..") || part.length > MAX_MODEL_ID_PART)
  );
}

/** A model id as shown in messages: a pasted 5,000-character id is cut. */
export function shownModelId(id: string): string {
  return id.length > 80 ? `${id.slice(0, 80)}… (${id.length} characters)` : id;
}

/** Outputs are `<safe alias>.npy` etc.: no separators, no leading dot, bounded length. */
export function safeFileStem(alias: string): string {
  const stem = alias
    .replaceAll("/", "__")
    .replace(/[^A-Za-z0-9._-]/g, "_")
    .replace(/^[.]+/, "_")
    .slice(0, 150);
  return stem.length > 0 ? stem : "model";
}
