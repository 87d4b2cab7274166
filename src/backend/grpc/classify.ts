import { status } from "@grpc/grpc-js";
import { BackendError, type FailureKind } from "../types.js";
import { RpcError } from "./client.js";

/** A refused key or permission: no retry and no other server of the run can help. */
const FATAL = new Set<number>([status.UNAUTHENTICATED, status.PERMISSION_DENIED]);
/** The server lost its models (restarted) or is going away: its fault, not the batch's. */
const SERVER_FAULT = new Set<number>([status.NOT_FOUND, status.UNAVAILABLE]);

/** The error our server gave for one batch alone, classified for the dispatcher. */
export function classifyBatchError(rpc: RpcError): BackendError {
  const kind: FailureKind = FATAL.has(rpc.code)
    ? "fatal"
    : SERVER_FAULT.has(rpc.code)
      ? "server"
      : "batch";
  return asBackendError(rpc, kind);
}

/** A stream that broke (deadline, transport, the server went away): the server's fault. */
export function classifyBroken(rpc: RpcError): BackendError {
  return asBackendError(rpc, FATAL.has(rpc.code) ? "fatal" : "server");
}

/** Any failed call, classified like a broken stream. */
export function backendErrorOf(target: string, err: unknown): BackendError {
  if (err instanceof BackendError) return err;
  return classifyBroken(RpcError.from(target, err));
}

function asBackendError(rpc: RpcError, kind: FailureKind): BackendError {
  return new BackendError(rpc.target, kind, status[rpc.code] ?? String(rpc.code), rpc.details);
}
