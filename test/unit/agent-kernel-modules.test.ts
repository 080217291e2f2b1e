/** The agent's kernel modules: names and parameters checked, modprobe run in order, the first failure stops CreateSandbox before anything else. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkKernelModules, loadKernelModules } from '../../src/agent/kernel-modules.js';
import { Sandbox } from '../../src/agent/sandbox.js';
import { Code, FailedPreconditionError } from '../../src/errors/index.js';
import { silentLogger } from '../../src/log/index.js';
import type { OciRuntime } from '../../src/agent/runtime.js';

test('names and parameters modprobe could misread are refused, naming the field', () => {
  assert.deepEqual(checkKernelModules([{ name: 'vsock', parameters: ['a=1,2', 'flag'] }]), [{ name: 'vsock', parameters: ['a=1,2', 'flag'] }]);
  const refused = (mods: Parameters<typeof checkKernelModules>[0], re: RegExp): void => {
    assert.throws(() => checkKernelModules(mods), (err: unknown) => {
      assert.equal((err as { code: number }).code, Code.INVALID_ARGUMENT);
      assert.match((err as Error).message, re);
      return true;
    });
  };
  refused([{ name: '', parameters: [] }], /^kernel_modules\[0\]\.name: "" is not a module name/);
  refused([{ name: 'ok', parameters: [] }, { name: '-r', parameters: [] }], /^kernel_modules\[1\]\.name: "-r"/);
  refused([{ name: 'x/y', parameters: [] }], /^kernel_modules\[0\]\.name: "x\/y"/);
  refused([{ name: 'm', parameters: ['ok=1', '--force'] }], /^kernel_modules\[0\]\.parameters\[1\]: "--force"/);
  refused([{ name: 'm', parameters: ['a=b c'] }], /parameters\[0\]/);
});

test('modprobe runs once per module, in order, and the first failure stops', async () => {
  const calls: string[][] = [];
  await loadKernelModules([{ name: 'a', parameters: [] }, { name: 'b', parameters: ['p=1'] }], async (args) => { calls.push(args); });
  assert.deepEqual(calls, [['a'], ['b', 'p=1']]);
  calls.length = 0;
  await assert.rejects(loadKernelModules([{ name: 'a', parameters: [] }, { name: 'nosuch', parameters: [] }, { name: 'c', parameters: [] }], async (args) => {
    calls.push(args);
    if (args[0] === 'nosuch') throw new FailedPreconditionError('kernel_modules: modprobe nosuch: module nosuch not found in modules.dep');
  }), /modprobe nosuch: module nosuch not found/);
  assert.deepEqual(calls, [['a'], ['nosuch']], 'c is never tried');
});

test('CreateSandbox loads the modules before the share and the id; a failure leaves no sandbox and can be retried', async () => {
  const order: string[] = [];
  let fail = true;
  const sb = new Sandbox({
    runtime: { path: '/usr/bin/crun' } as unknown as OciRuntime,
    stateDir: '/nonexistent/agent-state',
    ttyHelper: undefined,
    cgroupParent: '/kata-agent',
    logger: silentLogger(),
    sharedFs: { ensure: async () => { order.push('share'); }, release: async () => {} } as never,
    loadModules: async (mods) => {
      order.push(`modules ${mods.map((m) => m.name).join(',')}`);
      if (fail) throw new FailedPreconditionError('kernel_modules: modprobe vsock: not found');
    },
  });
  const spec = { tag: 'kataShared', mountPoint: '/run/kata-shared' };
  await assert.rejects(sb.createSandbox('p1', '', spec, [{ name: 'vsock', parameters: [] }]), /modprobe vsock/);
  assert.deepEqual(order, ['modules vsock'], 'nothing mounted after the failure');
  assert.equal(sb.sandboxId, '', 'no sandbox taken');
  fail = false;
  await sb.createSandbox('p1', '', spec, [{ name: 'vsock', parameters: [] }]);
  assert.deepEqual(order, ['modules vsock', 'modules vsock', 'share']);
  assert.equal(sb.sandboxId, 'p1');
});
