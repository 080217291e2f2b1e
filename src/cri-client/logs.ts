// The CRI container log format, as containerd's CRI plugin writes it to
// <log_directory>/<log_path> (ContainerStatus.log_path):
//   <RFC3339Nano time> <stdout|stderr> <tags> <message>\n
// where tags is "F" (full line) or "P" (partial: the message continues in the
// next entry of the same stream, without a newline in between).

export interface CriLogEntry {
  /** The timestamp as written (RFC 3339 with nanoseconds). */
  time: string;
  stream: 'stdout' | 'stderr';
  /** True for a "P" (partial) entry: no newline follows its message. */
  partial: boolean;
  msg: string;
}

/** Parse one line (without its newline); undefined if it is not in the CRI format. */
export function parseCriLogLine(line: string): CriLogEntry | undefined {
  const a = line.indexOf(' ');
  if (a <= 0) return undefined;
  const time = line.slice(0, a);
  if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(time)) return undefined;
  const b = line.indexOf(' ', a + 1);
  const stream = line.slice(a + 1, b < 0 ? undefined : b);
  if (stream !== 'stdout' && stream !== 'stderr') return undefined;
  if (b < 0) return undefined;
  const c = line.indexOf(' ', b + 1);
  const tags = line.slice(b + 1, c < 0 ? undefined : c);
  const tagList = tags.split(':');
  if (!tagList.every((t) => t === 'F' || t === 'P')) return undefined;
  return { time, stream, partial: tagList.includes('P'), msg: c < 0 ? '' : line.slice(c + 1) };
}

/** The output of one stream chunk: text and which stream it goes to. */
export interface LogOutput {
  stream: 'stdout' | 'stderr';
  text: string;
}

export interface RenderOptions {
  /** Prefix each output line with its timestamp (crictl logs -t). */
  timestamps?: boolean;
}

/**
 * Turn log file lines into output: each entry's message, followed by a
 * newline unless it is partial. Lines that are not CRI log lines are passed
 * through to stdout unchanged.
 */
export function renderCriLog(lines: string[], opts: RenderOptions = {}): LogOutput[] {
  const out: LogOutput[] = [];
  // per stream: are we in the middle of a partial line?
  const midLine = { stdout: false, stderr: false };
  for (const line of lines) {
    const e = parseCriLogLine(line);
    if (!e) {
      out.push({ stream: 'stdout', text: line + '\n' });
      continue;
    }
    const prefix = opts.timestamps && !midLine[e.stream] ? `${e.time} ` : '';
    out.push({ stream: e.stream, text: prefix + e.msg + (e.partial ? '' : '\n') });
    midLine[e.stream] = e.partial;
  }
  return out;
}

/** Split a chunk of the file into complete lines and the unfinished rest. */
export function splitLines(buf: string): { lines: string[]; rest: string } {
  const parts = buf.split('\n');
  const rest = parts.pop() ?? '';
  return { lines: parts, rest };
}

/** The last `n` lines (n < 0: all). */
export function tailLines(lines: string[], n: number): string[] {
  if (n < 0) return lines;
  if (n === 0) return [];
  return lines.slice(-n);
}
