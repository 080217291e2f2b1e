/** Assertions on status codes, shared by every test that talks ttrpc. */
import assert from 'node:assert/strict';
import { Code, StatusError } from '../../src/errors/index.js';

/** Asserts that `p` rejects with a StatusError of `code` (and a message matching `match`); returns it. */
export async function expectCode(p: Promise<unknown>, code: Code, match?: RegExp): Promise<StatusError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof StatusError, `expected a StatusError, got ${String(err)}`);
    assert.equal(Code[err.code], Code[code], `wrong code: ${err.message}`);
    if (match) assert.match(err.message, match);
    return err;
  }
  assert.fail(`expected ${Code[code]}, got success`);
}
