import type { Argv } from "yargs";
import { TOOL_VERSION } from "./config.js";

/** What both commands' parsers share: unknown flags refused, --version, -h/--help, the width. */
export function withHelpAndVersion<T>(parser: Argv<T>): Argv<T> {
  return parser
    .strict()
    .version(TOOL_VERSION)
    .help()
    .alias("h", "help")
    .wrap(Math.min(110, process.stdout.columns || 100));
}
