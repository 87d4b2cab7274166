import { createReadStream } from "node:fs";

const NEWLINE = 0x0a;

export interface LineScan {
  readonly lines: number;
  /** Bytes read. */
  readonly bytes: number;
  /** False when the last line has no newline: the file was cut short. */
  readonly endsWithNewline: boolean;
}

/**
 * The one line splitter of the program (the run's input scan, verify's
 * readers): calls `take` with each line's bytes (without the newline), its
 * byte offset and its 1-based number, reading the file in 1 MiB chunks, so
 * memory stays bounded by the longest line. `chunk` sees every chunk read
 * (to hash the file on the way).
 */
export async function forEachLineBytes(
  path: string,
  take: (line: Buffer, offset: number, lineNumber: number) => void,
  chunk?: (bytes: Buffer) => void,
): Promise<LineScan> {
  let carry: Buffer[] = [];
  let carryOffset = 0;
  let position = 0;
  let lineNumber = 0;
  let lastWasNewline = true;
  for await (const piece of createReadStream(path, { highWaterMark: 1 << 20 })) {
    const buf = piece as Buffer;
    if (buf.length === 0) continue;
    chunk?.(buf);
    let start = 0;
    let nl = buf.indexOf(NEWLINE, start);
    while (nl !== -1) {
      if (carry.length > 0) {
        take(Buffer.concat([...carry, buf.subarray(start, nl)]), carryOffset, ++lineNumber);
        carry = [];
      } else {
        take(buf.subarray(start, nl), position + start, ++lineNumber);
      }
      start = nl + 1;
      nl = buf.indexOf(NEWLINE, start);
    }
    if (start < buf.length) {
      if (carry.length === 0) carryOffset = position + start;
      // Copied: the stream may reuse its chunk.
      carry.push(Buffer.from(buf.subarray(start)));
    }
    lastWasNewline = buf[buf.length - 1] === NEWLINE;
    position += buf.length;
  }
  if (carry.length > 0) take(Buffer.concat(carry), carryOffset, ++lineNumber);
  return { lines: lineNumber, bytes: position, endsWithNewline: lastWasNewline };
}

/** Like forEachLineBytes, with each line as UTF-8 text. */
export function forEachLine(
  path: string,
  take: (line: string, lineNumber: number) => void,
): Promise<LineScan> {
  return forEachLineBytes(path, (line, _offset, n) => take(line.toString("utf8"), n));
}
