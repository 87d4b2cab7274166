/**
 * Errors that reach the user. Everything the user can cause or fix is an
 * ExitError: main.ts prints its one-line message and exits with its code, no
 * stack trace. Anything else is a bug and is reported as an internal error.
 */
export class ExitError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** A problem in the input file: names the line. */
export class InputError extends ExitError {
  constructor(
    readonly file: string,
    readonly line: number,
    problem: string,
  ) {
    super(`${file}:${line}: ${problem}`);
  }
}

/** Wrong flags or configuration. Exit code 2, like a usage error. */
export class ConfigError extends ExitError {
  constructor(message: string) {
    super(message, 2);
  }
}

/** An inference server could not be reached or refused the work. */
export class ServerError extends ExitError {}

/** The checkpoint does not fit this run, or cannot be read. */
export class CheckpointError extends ExitError {}

/** The run was stopped by a signal; what is done is kept. */
export class InterruptedError extends ExitError {
  constructor(
    readonly signal: NodeJS.Signals,
    resumeHint: string,
  ) {
    super(`interrupted by ${signal}; ${resumeHint}`, signal === "SIGINT" ? 130 : 143);
  }
}

/**
 * The disk (or the quota) filled up while writing `where`. Everything
 * durable is in the checkpoint, so the same command resumes once there is room.
 */
export class DiskFullError extends ExitError {
  constructor(where: string, reason = "no space left on device") {
    super(
      `disk full: cannot write ${where} (${reason}); free some space, then run the same command again to resume`,
    );
  }
}

/** Turns an OS error on a path into a one-line message. */
export function describeFsError(err: unknown, action: string, path: string): ExitError {
  if (err instanceof ExitError) return err;
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === "ENOSPC") return new DiskFullError(path);
  if (code === "EDQUOT") return new DiskFullError(path, "disk quota exceeded");
  const reasons: Record<string, string> = {
    ENOENT: "no such file or directory",
    EACCES: "permission denied",
    EPERM: "operation not permitted",
    ENOSPC: "no space left on device",
    EDQUOT: "disk quota exceeded",
    EROFS: "read-only file system",
    EISDIR: "is a directory",
    ENOTDIR: "a parent is not a directory",
    EMFILE: "too many open files",
  };
  const reason = (code && reasons[code]) ?? (err instanceof Error ? err.message : String(err));
  return new ExitError(`cannot ${action} ${path}: ${reason}`);
}
