// Test-only: a full disk, installed from outside the program. Loaded before the
// CLI with `node --import` (see diskFullEnv in test/helpers.ts), it makes every
// .npy row write past EMBED_FAULT_DISK_FULL_AFTER_ROWS rows fail with ENOSPC,
// as a disk that fills up during the run would. Production code knows nothing of it.
import { NpyMatrixFile } from "../../src/output/npy.js";

const limit = Number.parseInt(process.env.EMBED_FAULT_DISK_FULL_AFTER_ROWS ?? "", 10);
if (limit > 0) {
  const write = NpyMatrixFile.prototype.writeRows;
  let written = 0;
  NpyMatrixFile.prototype.writeRows = function (this: NpyMatrixFile, rows, data) {
    written += rows.length;
    if (written > limit) {
      throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
    }
    write.call(this, rows, data);
  };
}
