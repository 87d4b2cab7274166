import cliProgress from "cli-progress";
import type { ProgressMode } from "./config.js";

export interface ServerShare {
  readonly target: string;
  readonly state: string;
  readonly rows: number;
}

/** Progress of a long run: bars on a terminal, a log line every few seconds otherwise. */
export interface Progress {
  addModel(alias: string, total: number, alreadyDone: number): void;
  advance(alias: string, rows: number): void;
  servers(shares: readonly ServerShare[]): void;
  /** A line for the user, printed without tearing the bars. */
  note(line: string): void;
  stop(): void;
}

interface ModelCounter {
  total: number;
  done: number;
  doneAtStart: number;
  startedAt: number;
}

const LOG_EVERY_MS = 5000;

export function createProgress(
  mode: ProgressMode,
  stream: NodeJS.WriteStream = process.stderr,
): Progress {
  const resolved = mode === "auto" ? (stream.isTTY ? "bar" : "log") : mode;
  if (resolved === "bar") return new BarProgress(stream);
  if (resolved === "log") return new LogProgress(stream);
  return new LogProgress(stream, false);
}

function rate(c: ModelCounter): number {
  const seconds = (Date.now() - c.startedAt) / 1000;
  return seconds > 0 ? (c.done - c.doneAtStart) / seconds : 0;
}

function eta(c: ModelCounter): string {
  const r = rate(c);
  if (r <= 0) return "?";
  const s = Math.round((c.total - c.done) / r);
  return s >= 3600
    ? `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`
    : s >= 60
      ? `${Math.floor(s / 60)}m${s % 60}s`
      : `${s}s`;
}

function describeShares(shares: readonly ServerShare[]): string {
  if (shares.length < 2 && shares.every((s) => s.state === "up")) return "";
  return shares.map((s) => `${s.target} ${s.state} ${s.rows}`).join(", ");
}

class LogProgress implements Progress {
  private readonly counters = new Map<string, ModelCounter>();
  private lastLog = 0;
  private shares = "";

  constructor(
    private readonly stream: NodeJS.WriteStream,
    private readonly periodic = true,
  ) {}

  addModel(alias: string, total: number, alreadyDone: number): void {
    this.counters.set(alias, {
      total,
      done: alreadyDone,
      doneAtStart: alreadyDone,
      startedAt: Date.now(),
    });
  }

  advance(alias: string, rows: number): void {
    const c = this.counters.get(alias);
    if (!c) return;
    c.done += rows;
    if (!this.periodic) return;
    const now = Date.now();
    if (now - this.lastLog >= LOG_EVERY_MS || c.done === c.total) {
      this.lastLog = now;
      const pct = ((100 * c.done) / c.total).toFixed(1);
      const servers = this.shares ? ` | servers: ${this.shares}` : "";
      this.note(
        `${alias}: ${c.done}/${c.total} paragraphs (${pct}%), ${rate(c).toFixed(0)}/s, ETA ${eta(c)}${servers}`,
      );
    }
  }

  servers(shares: readonly ServerShare[]): void {
    this.shares = describeShares(shares);
  }

  note(line: string): void {
    this.stream.write(`embed-multi: ${line}\n`);
  }

  stop(): void {}
}

class BarProgress implements Progress {
  private readonly bars = new Map<string, { bar: cliProgress.SingleBar; counter: ModelCounter }>();
  private readonly multibar: cliProgress.MultiBar;
  private shares = "";

  constructor(stream: NodeJS.WriteStream) {
    this.multibar = new cliProgress.MultiBar(
      {
        stream,
        format:
          " {alias} |{bar}| {percentage}% {value}/{total} | {rate}/s | ETA {etaText}{servers}",
        barsize: 30,
        hideCursor: true,
        clearOnComplete: false,
        stopOnComplete: false,
        etaBuffer: 50,
      },
      cliProgress.Presets.shades_classic,
    );
  }

  addModel(alias: string, total: number, alreadyDone: number): void {
    const counter = { total, done: alreadyDone, doneAtStart: alreadyDone, startedAt: Date.now() };
    const bar = this.multibar.create(total, alreadyDone, this.payload(alias, counter));
    this.bars.set(alias, { bar, counter });
  }

  private payload(alias: string, counter: ModelCounter): Record<string, string> {
    return {
      alias,
      rate: rate(counter).toFixed(0),
      etaText: eta(counter),
      servers: this.shares ? ` | ${this.shares}` : "",
    };
  }

  advance(alias: string, rows: number): void {
    const entry = this.bars.get(alias);
    if (!entry) return;
    entry.counter.done += rows;
    entry.bar.update(entry.counter.done, this.payload(alias, entry.counter));
  }

  servers(shares: readonly ServerShare[]): void {
    this.shares = describeShares(shares);
  }

  note(line: string): void {
    this.multibar.log(`embed-multi: ${line}\n`);
  }

  stop(): void {
    this.multibar.stop();
  }
}
