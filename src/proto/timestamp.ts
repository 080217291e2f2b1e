/** google.protobuf.Timestamp from a Date, as containerd expects them (used by events, the Task service, `delete`, the agent). */

export interface PbTimestamp {
  seconds: number;
  nanos: number;
}

/** Go's zero time.Time: what containerd sends for "not exited yet" (not an absent field). */
export const GO_ZERO_TIMESTAMP: PbTimestamp = Object.freeze({ seconds: -62135596800, nanos: 0 });

export function toTimestamp(d: Date): PbTimestamp {
  const ms = d.getTime();
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1e6 };
}

/** An exit time, or Go's zero time when there is none. */
export function exitTimestamp(d: Date | undefined): PbTimestamp {
  return d ? toTimestamp(d) : GO_ZERO_TIMESTAMP;
}
