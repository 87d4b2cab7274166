import assert from "node:assert/strict";
import { test } from "node:test";
import { ServerUnreachableError } from "../src/dispatch/servers.js";
import { ServerError } from "../src/errors.js";
import { type Connectable, gather } from "../src/run/pool.js";

// gather() with fake connections: the grace timer and the refusal policy, no servers.

class FakeConnection implements Connectable {
  closed = false;
  constructor(readonly target: string) {}
  close(): void {
    this.closed = true;
  }
}

type Behaviour = "ready" | "never" | "unreachable" | "refuses";

function opener(behaviours: Record<string, Behaviour>) {
  return (c: FakeConnection): Promise<Session> => {
    switch (behaviours[c.target]) {
      case "ready":
        return Promise.resolve({ target: c.target, ready: true });
      case "unreachable":
        return Promise.reject(new ServerUnreachableError(`server ${c.target} is unreachable`));
      case "refuses":
        return Promise.reject(new ServerError(`server ${c.target}: UNAUTHENTICATED`));
      default:
        return new Promise(() => {});
    }
  };
}

interface Session {
  readonly target: string;
  readonly ready: boolean;
}

const notYet = (c: FakeConnection): Session => ({ target: c.target, ready: false });

test("all servers ready: no one waits", async () => {
  const conns = [new FakeConnection("a"), new FakeConnection("b")];
  const pool = await gather(conns, opener({ a: "ready", b: "ready" }), notYet, 60_000);
  assert.deepEqual(
    pool.ready.map((s) => s.target),
    ["a", "b"],
  );
  assert.equal(pool.waiting.length, 0);
});

test("a straggler gets the grace period, then the run goes on without it", async () => {
  const conns = [new FakeConnection("a"), new FakeConnection("slow"), new FakeConnection("down")];
  const pool = await gather(
    conns,
    opener({ a: "ready", slow: "never", down: "unreachable" }),
    notYet,
    20,
  );
  assert.deepEqual(
    pool.ready.map((s) => s.target),
    ["a"],
  );
  assert.deepEqual(
    pool.waiting.map((s) => s.target),
    ["slow", "down"],
  );
  assert.ok(
    conns.every((c) => !c.closed),
    "waiting servers stay connected",
  );
});

test("a server that answers no stops the run; with none ready, the unreachable error is thrown", async () => {
  const conns = [new FakeConnection("a"), new FakeConnection("bad")];
  await assert.rejects(
    gather(conns, opener({ a: "ready", bad: "refuses" }), notYet, 60_000),
    /server bad: UNAUTHENTICATED/,
  );
  assert.ok(conns.every((c) => c.closed));
  await assert.rejects(
    gather([new FakeConnection("x")], opener({ x: "unreachable" }), notYet, 60_000),
    ServerUnreachableError,
  );
});
