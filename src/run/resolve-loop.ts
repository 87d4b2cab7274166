import type { Resolve } from "../backend/targets.js";

export type { Resolve } from "../backend/targets.js";

/** A server that came or went during the run, for the summary. */
export interface Membership {
  readonly target: string;
  readonly change: "joined" | "left";
  /** Seconds since the run started. */
  readonly at: number;
}

export interface ResolveHooks {
  /** A new address of a name: connect it, check it, probe it, give it work. */
  join(address: string, authority: string): void;
  /** An address the name no longer has: drain it. */
  leave(address: string): void;
  note(line: string): void;
}

interface DnsTarget {
  readonly target: string;
  readonly host: string;
  readonly port: string;
}

/** `dns:///name:port` entries of --servers; others are fixed addresses. */
export function dnsTargets(targets: readonly string[]): DnsTarget[] {
  return targets
    .filter((t) => t.startsWith("dns:///"))
    .map((target) => {
      const hostPort = target.slice("dns:///".length);
      const colon = hostPort.lastIndexOf(":");
      return { target, host: hostPort.slice(0, colon), port: hostPort.slice(colon + 1) };
    });
}

/**
 * Re-resolves every `dns:///` target every `intervalMs`, and turns the
 * difference into joins and leaves: a Kubernetes headless Service's answer
 * follows its ready pods, so pods an autoscaler adds are used and pods that go
 * are drained. A failed or empty answer changes nothing (a DNS hiccup must not
 * drain a healthy fleet); the dispatcher's own failover covers dead servers.
 */
export class ResolveLoop {
  private readonly known = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private readonly startedAt = Date.now();

  constructor(
    private readonly targets: readonly DnsTarget[],
    /** host:port of the servers the run started with (from these names). */
    initial: readonly string[],
    private readonly resolve: Resolve,
    private readonly intervalMs: number,
    private readonly hooks: ResolveHooks,
    /** Every join and leave, in order (the run's summary reads it). */
    readonly changes: Membership[] = [],
  ) {
    for (const a of initial) this.known.add(a);
  }

  start(): void {
    if (this.targets.length === 0 || this.timer) return;
    this.timer = setInterval(() => {
      this.running ??= this.tick().finally(() => {
        this.running = null;
      });
    }, this.intervalMs);
    // The loop never keeps a finished run alive.
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One round: resolve every name, join what is new, drain what is gone. */
  async tick(): Promise<void> {
    const now = new Map<string, string>();
    for (const t of this.targets) {
      let addresses: string[];
      try {
        addresses = await this.resolve(t.host);
      } catch (err) {
        const why = (err as NodeJS.ErrnoException).code ?? String(err);
        this.hooks.note(
          `--servers ${t.target}: cannot resolve ${t.host} again (${why}); keeping its servers`,
        );
        return;
      }
      if (addresses.length === 0) {
        this.hooks.note(
          `--servers ${t.target}: ${t.host} has no addresses now; keeping its servers`,
        );
        return;
      }
      for (const a of addresses) now.set(`${a}:${t.port}`, t.host);
    }
    const at = Math.round((Date.now() - this.startedAt) / 1000);
    for (const [address, authority] of [...now].sort(([a], [b]) => a.localeCompare(b))) {
      if (this.known.has(address)) continue;
      this.known.add(address);
      this.changes.push({ target: address, change: "joined", at });
      this.hooks.note(`server ${address} joined (a new address of ${authority})`);
      this.hooks.join(address, authority);
    }
    for (const address of [...this.known].sort()) {
      if (now.has(address)) continue;
      this.known.delete(address);
      this.changes.push({ target: address, change: "left", at });
      this.hooks.note(`server ${address} left (no longer an address of its name): draining it`);
      this.hooks.leave(address);
    }
  }
}
