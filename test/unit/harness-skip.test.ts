/** skipUnlessCi: a suite that cannot run is skipped on a developer's machine and fails under CI=true. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { skipUnlessCi } from '../harness/skip.js';

test('skipUnlessCi: runs when it can; skips with the reason, or under CI=true throws naming it', () => {
  const before = process.env.CI;
  try {
    delete process.env.CI;
    assert.equal(skipUnlessCi(true, 'needs x'), false);
    assert.equal(skipUnlessCi(false, 'needs x'), 'needs x');
    process.env.CI = 'true';
    assert.equal(skipUnlessCi(true, 'needs x'), false);
    assert.throws(() => skipUnlessCi(false, 'needs x'), /CI=true: this suite must run, but it needs x/);
  } finally {
    if (before === undefined) delete process.env.CI;
    else process.env.CI = before;
  }
});
