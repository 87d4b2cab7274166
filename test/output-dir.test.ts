import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ensureWritableDir, makeDirs } from "../src/output/output-dir.js";
import { tempDir } from "./helpers.js";

// Issue 16 item 9: Node's recursive mkdir reports a read-only mount or a
// folder without write permission as "no such file or directory" (it stats the
// folder it could not make and returns that error). The tests run as root,
// where a mode does not stop a write, so a one-level mkdir that refuses like
// the OS stands in for the mount.

function refusing(code: string, under: string) {
  return (path: string) => {
    if (path.startsWith(`${under}/`)) {
      throw Object.assign(new Error(`${code}: refused, mkdir '${path}'`), { code });
    }
    mkdirSync(path);
  };
}

test("a new output subfolder on a read-only mount says read-only, naming the folder", () => {
  const mount = tempDir("ro-mount");
  const out = join(mount, "new", "sub");
  for (const [code, words] of [
    ["EROFS", "read-only file system"],
    ["EACCES", "permission denied"],
  ] as const) {
    assert.throws(
      () => makeDirs(out, refusing(code, mount)),
      (err: Error) => {
        assert.equal(
          err.message,
          `cannot create output directory ${out}: ${words} (creating ${join(mount, "new")})`,
        );
        assert.doesNotMatch(err.message, /no such file/);
        return true;
      },
    );
  }
});

test("makeDirs creates every missing level and accepts an existing folder", () => {
  const root = tempDir("mkdirs");
  const out = join(root, "a", "b", "c");
  makeDirs(out);
  assert.ok(existsSync(out));
  makeDirs(out);
  ensureWritableDir(join(root, "x", "y"));
  assert.ok(existsSync(join(root, "x", "y")));
});
