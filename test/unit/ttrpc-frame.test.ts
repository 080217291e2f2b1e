import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameDecoder, MESSAGE_LENGTH_MAX, MessageType, encodeFrame, type DecodedFrame } from '../../src/ttrpc/frame.js';

function frames(): Buffer[] {
  return [
    encodeFrame(1, MessageType.Request, 0, Buffer.from('hello')),
    encodeFrame(3, MessageType.Response, 0, Buffer.alloc(0)),
    encodeFrame(0xfffffffd, MessageType.Data, 0x4, Buffer.from('x'.repeat(300))),
  ];
}

function summary(out: DecodedFrame[]) {
  return out.map((f) => f.kind === 'frame'
    ? { kind: f.kind, streamId: f.streamId, type: f.type, flags: f.flags, payload: f.payload.toString() }
    : { kind: f.kind, streamId: f.streamId, length: f.length });
}

test('header is 10 bytes, big-endian length, stream id, type, flags', () => {
  const b = encodeFrame(0x01020304, MessageType.Response, 0x02, Buffer.from([0xaa, 0xbb]));
  assert.deepEqual([...b], [0, 0, 0, 2, 1, 2, 3, 4, 2, 2, 0xaa, 0xbb]);
});

test('decodes the same frames whatever the split point', () => {
  const all = Buffer.concat(frames());
  const whole = summary(new FrameDecoder().push(all));
  assert.equal(whole.length, 3);
  for (let i = 0; i <= all.length; i++) {
    for (const j of [i, Math.min(all.length, i + 7), all.length]) {
      const d = new FrameDecoder();
      const out = [...d.push(all.subarray(0, i)), ...d.push(all.subarray(i, j)), ...d.push(all.subarray(j))];
      assert.deepEqual(summary(out), whole, `split at ${i}/${j}`);
      assert.equal(d.pending, 0);
    }
  }
});

test('decodes byte by byte', () => {
  const all = Buffer.concat(frames());
  const d = new FrameDecoder();
  const out: DecodedFrame[] = [];
  for (const byte of all) out.push(...d.push(Buffer.from([byte])));
  assert.deepEqual(summary(out), summary(new FrameDecoder().push(all)));
});

test('refuses to encode a payload over 4 MiB', () => {
  assert.throws(() => encodeFrame(1, MessageType.Request, 0, Buffer.alloc(MESSAGE_LENGTH_MAX + 1)), RangeError);
  assert.equal(encodeFrame(1, MessageType.Request, 0, Buffer.alloc(MESSAGE_LENGTH_MAX)).length, MESSAGE_LENGTH_MAX + 10);
});

test('an oversized frame is skipped, reported once, and later frames still decode', () => {
  const max = 16;
  const big = Buffer.alloc(10 + 40);
  big.writeUInt32BE(40, 0);
  big.writeUInt32BE(5, 4);
  big.writeUInt8(MessageType.Request, 8);
  const next = encodeFrame(7, MessageType.Request, 0, Buffer.from('ok'));
  const all = Buffer.concat([big, next]);
  for (let i = 0; i <= all.length; i++) {
    const d = new FrameDecoder(max);
    const out = summary([...d.push(all.subarray(0, i)), ...d.push(all.subarray(i))]);
    assert.deepEqual(out, [
      { kind: 'oversized', streamId: 5, length: 40 },
      { kind: 'frame', streamId: 7, type: MessageType.Request, flags: 0, payload: 'ok' },
    ], `split at ${i}`);
  }
});

test('a partial frame stays pending', () => {
  const d = new FrameDecoder();
  const f = encodeFrame(1, MessageType.Request, 0, Buffer.from('abcdef'));
  assert.deepEqual(d.push(f.subarray(0, 12)), []);
  assert.equal(d.pending, 12);
});
