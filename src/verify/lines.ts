import { createReadStream } from "node:fs";

const NEWLINE = 0x0a;

export interface LineScan {
  readonly lines: number;
  /** False when the last line has no newline: the file was cut short. */
  readonly endsWithNewline: boolean;
}

/**
 * Calls `take` with each line (without its newline) and its 1-based number,
 * reading the file in 1 MiB chunks: memory stays bounded by the longest line.
 */
export async function forEachLine(
  path: string,
  take: (line: string, lineNumber: number) => void,
): Promise<LineScan> {
  let carry: Buffer[] = [];
  let lineNumber = 0;
  let sawAny = false;
  let lastWasNewline = true;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    const buf = chunk as Buffer;
    if (buf.length === 0) continue;
    sawAny = true;
    let start = 0;
    let nl = buf.indexOf(NEWLINE, start);
    while (nl !== -1) {
      const piece = buf.subarray(start, nl);
      const line = carry.length > 0 ? Buffer.concat([...carry, piece]) : piece;
      carry = [];
      take(line.toString("utf8"), ++lineNumber);
      start = nl + 1;
      nl = buf.indexOf(NEWLINE, start);
    }
    if (start < buf.length) carry.push(Buffer.from(buf.subarray(start)));
    lastWasNewline = buf[buf.length - 1] === NEWLINE;
  }
  if (carry.length > 0) take(Buffer.concat(carry).toString("utf8"), ++lineNumber);
  return { lines: lineNumber, endsWithNewline: !sawAny || lastWasNewline };
}
