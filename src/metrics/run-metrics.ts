import { createServer, type Server } from "node:http";
import { Counter, Gauge, Registry } from "prom-client";
import { ExitError } from "../errors.js";
import type { Progress, ServerShare } from "../progress.js";

/** A server's share of the work as the dispatcher sees it, read at scrape time. */
export interface ServerLoad {
  readonly target: string;
  readonly state: string;
  readonly inFlight: number;
}

/**
 * The orchestrator's Prometheus metrics, from the maintained prom-client: one
 * registry per process (a run is one process), counted always, served only
 * with --metrics_port. Rows and ETA come from the progress calls; batches in
 * flight are read from the dispatcher when a scrape asks.
 */
class RunMetrics {
  readonly registry = new Registry();
  private loads: () => readonly ServerLoad[] = () => [];
  private readonly started = new Map<string, { at: number; done: number; total: number }>();
  private readonly done = new Map<string, number>();

  readonly rowsDone = new Gauge({
    name: "embed_multi_rows_done",
    help: "Rows of the model durably written (also those of earlier runs of this checkpoint)",
    labelNames: ["model"],
    registers: [this.registry],
  });
  readonly rowsTotal = new Gauge({
    name: "embed_multi_rows",
    help: "Rows of the model in this run's input (or shard)",
    labelNames: ["model"],
    registers: [this.registry],
  });
  readonly rowsEmbedded = new Counter({
    name: "embed_multi_rows_embedded_total",
    help: "Rows embedded and written by this process",
    labelNames: ["model"],
    registers: [this.registry],
  });
  readonly retries = new Counter({
    name: "embed_multi_batch_retries_total",
    help: "Failed batch attempts (sent again), by reason: error or check (vectors failed the checks)",
    labelNames: ["model", "reason"],
    registers: [this.registry],
  });
  readonly probeFailures = new Counter({
    name: "embed_multi_probe_failures_total",
    help: "Servers that failed the probe (refused, or to be tried again)",
    labelNames: ["server", "outcome"],
    registers: [this.registry],
  });

  constructor() {
    const metrics = this;
    new Gauge({
      name: "embed_multi_batches_in_flight",
      help: "Batches sent to the server and not yet answered",
      labelNames: ["server"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const load of metrics.loads()) this.set({ server: load.target }, load.inFlight);
      },
    });
    new Gauge({
      name: "embed_multi_server_up",
      help: "1 while the server gets work, 0 while it is down or retired",
      labelNames: ["server"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const load of metrics.loads())
          this.set({ server: load.target }, load.state === "up" ? 1 : 0);
      },
    });
    new Gauge({
      name: "embed_multi_eta_seconds",
      help: "Seconds left for the model at this process's rate so far (absent before a rate is known)",
      labelNames: ["model"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [model, s] of metrics.started) {
          const done = metrics.done.get(model) ?? s.done;
          const seconds = (Date.now() - s.at) / 1000;
          const rate = seconds > 0 ? (done - s.done) / seconds : 0;
          if (rate > 0) this.set({ model }, (s.total - done) / rate);
          else if (done >= s.total) this.set({ model }, 0);
        }
      },
    });
  }

  /** Where batches in flight come from while the dispatcher runs. */
  watchServers(loads: () => readonly ServerLoad[]): void {
    this.loads = loads;
  }

  addModel(model: string, total: number, done: number): void {
    this.started.set(model, { at: Date.now(), done, total });
    this.done.set(model, done);
    this.rowsTotal.set({ model }, total);
    this.rowsDone.set({ model }, done);
  }

  advance(model: string, rows: number): void {
    const done = (this.done.get(model) ?? 0) + rows;
    this.done.set(model, done);
    this.rowsDone.set({ model }, done);
    this.rowsEmbedded.inc({ model }, rows);
  }
}

export const RUN_METRICS = new RunMetrics();

/** The run's progress, also counted in the metrics. */
export function countedProgress(inner: Progress): Progress {
  return {
    addModel(alias, total, alreadyDone) {
      RUN_METRICS.addModel(alias, total, alreadyDone);
      inner.addModel(alias, total, alreadyDone);
    },
    advance(alias, rows) {
      RUN_METRICS.advance(alias, rows);
      inner.advance(alias, rows);
    },
    servers(shares: readonly ServerShare[]) {
      inner.servers(shares);
    },
    note: (line) => inner.note(line),
    stop: () => inner.stop(),
  };
}

/** Serves /metrics on host:port (0 picks a free one); resolves with the bound port. */
export function serveMetrics(
  host: string,
  port: number,
): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
      res.writeHead(404).end("not found: try /metrics\n");
      return;
    }
    RUN_METRICS.registry.metrics().then(
      (text) => res.writeHead(200, { "Content-Type": RUN_METRICS.registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500).end(`${String(err)}\n`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once("error", (err) =>
      reject(new ExitError(`cannot serve metrics on ${host}:${port}: ${err.message}`)),
    );
    server.listen(port, host, () => {
      const address = server.address();
      const bound = typeof address === "object" && address ? address.port : port;
      // The run's end must not wait for a scraper's keep-alive connection.
      server.unref();
      resolve({
        port: bound,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
  });
}
