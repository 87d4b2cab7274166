import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const SRC = join(ROOT, "src");

/** Every hand-written .ts file under src/ (src/gen/ is generated). */
function sources(dir = SRC): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return path === join(SRC, "gen") ? [] : sources(path);
    return name.endsWith(".ts") ? [path] : [];
  });
}

/** The relative imports of a file (import and export ... from), as paths under the repository. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const found = text.matchAll(/(?:import|export)[^;]*?from\s+"(\.{1,2}\/[^"]+)"/gs);
  return [...found].map((m) => relative(ROOT, resolve(dirname(file), m[1] ?? "")));
}

/** The folder a file belongs to: src/run.ts goes with src/run/, as src/config.ts with src/config/. */
function folderOf(path: string): string {
  const [, top] = path.split("/");
  const name = (top ?? "").replace(/\.[jt]s$/, "");
  if (path.split("/").length > 2 || existsSync(join(SRC, name))) return `src/${name}`;
  return path;
}

function folderArrows(): Map<string, Map<string, string[]>> {
  const arrows = new Map<string, Map<string, string[]>>();
  for (const file of sources()) {
    const from = folderOf(relative(ROOT, file));
    for (const target of importsOf(file)) {
      const to = folderOf(target);
      if (to === from) continue;
      const out = arrows.get(from) ?? new Map<string, string[]>();
      out.set(to, [...(out.get(to) ?? []), `${relative(ROOT, file)} -> ${target}`]);
      arrows.set(from, out);
    }
  }
  return arrows;
}

test("only the gRPC backend imports the generated code", () => {
  const outside = sources().flatMap((file) =>
    importsOf(file)
      .filter((t) => t.startsWith("src/gen/"))
      .map((t) => `${relative(ROOT, file)} -> ${t}`)
      .filter((line) => !line.startsWith("src/backend/grpc/")),
  );
  assert.deepEqual(outside, []);
});

test("the folders of src/ import each other in one direction: no circle, so no arrow back up", () => {
  const arrows = folderArrows();
  // A folder reached again from itself names the imports that close the circle.
  const reaches = (from: string, to: string, seen = new Set<string>()): boolean => {
    if (from === to) return true;
    if (seen.has(from)) return false;
    seen.add(from);
    return [...(arrows.get(from)?.keys() ?? [])].some((next) => reaches(next, to, seen));
  };
  const circles: string[] = [];
  for (const [from, out] of arrows) {
    for (const [to, files] of out) if (reaches(to, from)) circles.push(...files);
  }
  assert.deepEqual(circles, []);
});

test("the layers the design names hold", () => {
  const arrows = folderArrows();
  const never: [string, string][] = [
    ["src/config", "src/verify"],
    ["src/config", "src/run"],
    ["src/checks", "src/run"],
    ["src/checks", "src/dispatch"],
    ["src/checks", "src/verify"],
    ["src/backend", "src/run"],
    ["src/backend", "src/dispatch"],
    ["src/backend", "src/config"],
    ["src/model", "src/config"],
  ];
  const broken = never.flatMap(([from, to]) => arrows.get(from)?.get(to) ?? []);
  assert.deepEqual(broken, []);
  // The test reads the tree it means to: these arrows exist.
  assert.ok(arrows.get("src/run")?.has("src/backend"));
  assert.ok(arrows.get("src/backend")?.has("src/gen"));
});
