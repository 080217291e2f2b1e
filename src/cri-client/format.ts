// Human output in crictl's style: tabwriter-aligned tables (minimum column
// width 20, padding 3, as crictl configures Go's text/tabwriter), ids
// truncated to 13 characters, "2 minutes ago" (go-units HumanDuration) and
// "1.08MB" (go-units HumanSizeWithPrecision, 3 digits).

/** crictl's truncatedIDLen. */
export const TRUNCATED_ID_LEN = 13;

/** Strip `prefix` (e.g. "sha256:") and cut to 13 characters, as crictl's getTruncatedID. */
export function truncateId(id: string, prefix = ''): string {
  const s = prefix && id.startsWith(prefix) ? id.slice(prefix.length) : id;
  return s.length > TRUNCATED_ID_LEN ? s.slice(0, TRUNCATED_ID_LEN) : s;
}

/**
 * Align rows like Go's tabwriter.NewWriter(w, 20, 1, 3, ' ', 0) with cells
 * separated by tabs: every column but the last is padded to
 * max(20, widest cell + 3); the last cell of a row is written as is.
 */
export function formatTable(rows: string[][], minWidth = 20, padding = 3): string {
  const ncols = Math.max(0, ...rows.map((r) => r.length));
  const widths: number[] = [];
  for (let c = 0; c < ncols - 1; c++) {
    const w = Math.max(0, ...rows.map((r) => (c < r.length - 1 ? [...(r[c] ?? '')].length : 0)));
    widths.push(Math.max(minWidth, w + padding));
  }
  return rows
    .map((r) => r.map((cell, c) => (c < r.length - 1 ? cell + ' '.repeat(widths[c]! - [...cell].length) : cell)).join(''))
    .map((l) => l + '\n')
    .join('');
}

/** go-units HumanDuration. */
export function humanDuration(ms: number): string {
  const seconds = Math.trunc(ms / 1000);
  if (seconds < 1) return 'Less than a second';
  if (seconds === 1) return '1 second';
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.trunc(ms / 60_000);
  if (minutes === 1) return 'About a minute';
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.trunc(ms / 3_600_000 + 0.5);
  if (hours === 1) return 'About an hour';
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.trunc(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.trunc(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.trunc(hours / 24 / 30)} months`;
  return `${Math.trunc(ms / 3_600_000 / 24 / 365)} years`;
}

/** "<duration> ago" for a CRI timestamp in nanoseconds since the epoch, as crictl's CREATED column. */
export function createdAgo(createdNs: bigint, nowMs = Date.now()): string {
  const ms = Number(BigInt(nowMs) * 1_000_000n - createdNs) / 1e6;
  return humanDuration(Math.max(0, ms)) + ' ago';
}

/** go-units HumanSizeWithPrecision(size, 3): decimal units, %.3g. */
export function humanSize(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'];
  let size = bytes;
  let i = 0;
  while (size >= 1000 && i < units.length - 1) {
    size /= 1000;
    i++;
  }
  return `${formatG3(size)}${units[i]}`;
}

/** C's %.3g for the values humanSize produces (0 ≤ v < 1000). */
function formatG3(v: number): string {
  if (v === 0) return '0';
  const s = v.toPrecision(3);
  if (s.includes('e')) return s.replace(/\.?0+e/, 'e').replace(/e\+?(-?)(\d)$/, 'e$1+0$2');
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

/** An int64 from protobufjs (number or Long) as a bigint. */
export function int64(v: unknown): bigint {
  if (v === null || v === undefined) return 0n;
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return BigInt(Math.trunc(v));
  if (typeof v === 'string') return BigInt(v);
  return BigInt(String(v)); // Long has toString()
}

/** RFC 3339 with nanoseconds (UTC) for a CRI nanosecond timestamp; "" for 0. */
export function nsToRfc3339(ns: bigint): string {
  if (ns === 0n) return '';
  const ms = ns / 1_000_000n;
  const frac = (ns % 1_000_000_000n).toString().padStart(9, '0');
  return new Date(Number(ms)).toISOString().replace(/\.\d{3}Z$/, `.${frac}Z`);
}

const CONTAINER_STATES = ['Created', 'Running', 'Exited', 'Unknown'];
const POD_STATES = ['Ready', 'NotReady'];

/** CRI ContainerState number → crictl's word. */
export function containerStateName(s: number): string {
  return CONTAINER_STATES[s] ?? 'Unknown';
}

/** CRI PodSandboxState number → crictl's word. */
export function podStateName(s: number): string {
  return POD_STATES[s] ?? 'Unknown';
}

/** "repo:tag" → [repo, tag]; a digest-only or tagless name gets "<none>". */
export function splitRepoTag(ref: string): [string, string] {
  const at = ref.indexOf('@');
  if (at >= 0) return [ref.slice(0, at), '<none>'];
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  if (colon > slash) return [ref.slice(0, colon), ref.slice(colon + 1)];
  return [ref, '<none>'];
}

/** Key/value lines ("Name: value"), aligned. */
export function formatFields(fields: [string, string][]): string {
  const w = Math.max(0, ...fields.map(([k]) => k.length)) + 2;
  return fields.map(([k, v]) => `${(k + ':').padEnd(w)}${v}\n`).join('');
}
