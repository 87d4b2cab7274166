/**
 * The arguments of one embed-multi run, as tests and benchmarks build them:
 * `cliArgs(input, out, "m", { engine: "debug", batch_size: 8 })`. A list
 * gives a flag several values (`--models a b`); `true` is a flag without a
 * value (`{ restart: true }` is `--restart`).
 */
export function cliArgs(
  input: string,
  out: string,
  models: string | readonly string[],
  flags: Readonly<Record<string, string | number | true>> = {},
): string[] {
  const args = ["--input_file", input, "--output_dir", out, "--models"];
  args.push(...(typeof models === "string" ? [models] : models));
  return [...args, ...flagArgs(flags)];
}

/** `{ name: value }` as `--name value`, `{ name: true }` as `--name`. */
export function flagArgs(flags: Readonly<Record<string, string | number | true>>): string[] {
  const args: string[] = [];
  for (const [name, value] of Object.entries(flags)) {
    args.push(`--${name}`);
    if (value !== true) args.push(String(value));
  }
  return args;
}
