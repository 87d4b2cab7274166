import { lookup } from "node:dns/promises";
import { ServerError } from "../errors.js";

/** The addresses of a host name (IPv6 in brackets), as a resolver answers. */
export type Resolve = (host: string) => Promise<string[]>;

/** The system resolver (getaddrinfo: /etc/hosts, then DNS), every address. */
export const systemResolve: Resolve = async (host) => {
  const answers = await lookup(host, { all: true });
  return answers.map((a) => (a.family === 6 ? `[${a.address}]` : a.address));
};

/**
 * What is wrong with a --servers entry, or null: each kind of backend says
 * which entries it takes (ours: host:port, [v6]:port or dns:///name:port).
 * A new kind adds its form here, beside its entry in select.ts.
 */
export function targetProblem(target: string): string | null {
  const hostPort = target.startsWith("dns:///") ? target.slice("dns:///".length) : target;
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(hostPort);
  const port = match ? Number(match[2]) : 0;
  if (!match || port < 1 || port > 65535) return "is not host:port or dns:///name:port";
  return null;
}

/** One server to open a connection and a stream to. */
export interface ServerTarget {
  /** host:port to dial. */
  readonly address: string;
  /** The name the server's TLS certificate carries, when it differs from the address. */
  readonly authority: string | null;
}

/**
 * Turns --servers into servers. A `dns:///name:port` target (a Kubernetes
 * headless Service) becomes one server per address the name resolves to.
 * gRPC's own round-robin would spread calls over the pods, but our work goes
 * over one long-lived stream per server, which round-robin pins to a single
 * pod, and models loaded on one pod are unknown to another. One connection
 * per pod gives each its own stream, window and failover instead.
 */
export async function resolveTargets(
  targets: readonly string[],
  resolve: Resolve = systemResolve,
): Promise<ServerTarget[]> {
  const out: ServerTarget[] = [];
  for (const target of targets) {
    if (!target.startsWith("dns:///")) {
      out.push({ address: target, authority: null });
      continue;
    }
    const hostPort = target.slice("dns:///".length);
    const colon = hostPort.lastIndexOf(":");
    const host = hostPort.slice(0, colon);
    const port = hostPort.slice(colon + 1);
    let addresses: string[];
    try {
      addresses = await resolve(host);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? String(err);
      throw new ServerError(`--servers ${target}: cannot resolve ${host} (${code})`);
    }
    const unique = [...new Set(addresses)];
    if (unique.length === 0) throw new ServerError(`--servers ${target}: ${host} has no addresses`);
    for (const address of unique.sort())
      out.push({ address: `${address}:${port}`, authority: host });
  }
  return out;
}
