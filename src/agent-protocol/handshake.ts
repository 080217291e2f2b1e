/**
 * The agent channel handshake's wire format, shared by the host's client
 * (src/agent-client/handshake.ts) and the guest agent (src/agent/channel.ts,
 * where the protocol is explained):
 *
 *   host  → agent   "KATAAGENT1 HELLO <nonce>\n"   (repeated until answered)
 *   agent → host    "KATAAGENT1 READY <nonce>\n"
 */
export const CHANNEL_MAGIC = 'KATAAGENT1';
export const HELLO_PREFIX = Buffer.from(`${CHANNEL_MAGIC} HELLO `, 'latin1');
export const READY_PREFIX = Buffer.from(`${CHANNEL_MAGIC} READY `, 'latin1');
const NONCE_RE = /^[A-Za-z0-9]{8,64}$/;

export function helloLine(nonce: string): Buffer {
  return Buffer.from(`${CHANNEL_MAGIC} HELLO ${nonce}\n`, 'latin1');
}

export function readyLine(nonce: string): Buffer {
  return Buffer.from(`${CHANNEL_MAGIC} READY ${nonce}\n`, 'latin1');
}

export function isValidNonce(nonce: string): boolean {
  return NONCE_RE.test(nonce);
}

/**
 * Host side: the offset just past "READY <nonce>\n" in `buf`, or -1. Bytes
 * before it are stale and must be discarded; bytes after it are ttrpc.
 */
export function findReady(buf: Buffer, nonce: string): number {
  const line = Buffer.concat([READY_PREFIX, Buffer.from(`${nonce}\n`, 'latin1')]);
  const i = buf.indexOf(line);
  return i < 0 ? -1 : i + line.length;
}
