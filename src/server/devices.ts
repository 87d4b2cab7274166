import { spawnSync } from "node:child_process";
import { ConfigError } from "../errors.js";

/** How many CUDA devices this process may use; null when that cannot be told. */
export type VisibleGpus = () => number | null;

/**
 * CUDA_VISIBLE_DEVICES when set (what CUDA itself honours), else the GPUs
 * nvidia-smi lists; null without either (no driver: then `cuda` is left to the
 * server, which says what is wrong).
 */
export const systemGpus: VisibleGpus = () => {
  const visible = process.env.CUDA_VISIBLE_DEVICES;
  if (visible !== undefined) {
    return visible
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s.length > 0 && s !== "-1").length;
  }
  const smi = spawnSync("nvidia-smi", ["-L"], { encoding: "utf8", timeout: 10_000 });
  if (smi.status !== 0 || typeof smi.stdout !== "string") return null;
  return smi.stdout.split("\n").filter((l) => /^GPU \d+/.test(l)).length;
};

const DEVICE = /^(cpu|cuda)(:\d+)?$/;

/**
 * The devices of the embedded servers, one server each: `cuda` means every
 * visible GPU, `cuda:0,cuda:2` that list; `cpu` one CPU server (a list of cpu
 * entries starts that many, as stand-ins for GPUs in tests). "" = the
 * server's default, one server.
 */
export function embeddedDevices(device: string, gpus: VisibleGpus = systemGpus): string[] {
  const items = device
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (items.length === 0) return [""];
  const bad = items.find((d) => !DEVICE.test(d) || d === "cpu:0");
  if (bad !== undefined) {
    throw new ConfigError(`--device: "${bad}" is not cpu, cuda or cuda:N (in "${device}")`);
  }
  if (items.length > 1 && items.includes("cuda")) {
    throw new ConfigError(
      `--device: "cuda" already means every visible GPU; list cuda:N entries instead (got "${device}")`,
    );
  }
  const twice = items.find((d, i) => d !== "cpu" && items.indexOf(d) !== i);
  if (twice !== undefined) throw new ConfigError(`--device: ${twice} is listed twice`);
  if (items.length === 1 && items[0] === "cuda") {
    const count = gpus();
    if (count === null || count <= 1) return ["cuda"];
    return Array.from({ length: count }, (_, i) => `cuda:${i}`);
  }
  return items;
}
