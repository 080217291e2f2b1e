/**
 * What a VM cannot give is refused at Create, naming the setting
 * (src/service/vm-boundary.ts): the host's network, IPC and PID namespaces
 * for the pod's own container, and rshared mounts for any container.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Code } from '../../src/errors/index.js';
import { refuseWhatAVmCannotGive } from '../../src/service/vm-boundary.js';

const ns = (...types: string[]) => types.map((type) => ({ type }));
const spec = (namespaces: unknown[], mounts: unknown[] = []) => ({ process: {}, linux: { namespaces }, mounts });
const ALL = ns('pid', 'ipc', 'uts', 'mount', 'network');

function refused(fn: () => void, re: RegExp): void {
  assert.throws(fn, (e: Error & { code?: number }) => {
    assert.equal(e.code, Code.UNIMPLEMENTED);
    assert.match(e.message, re);
    return true;
  });
}

test('the pod\'s own container without a network, IPC or PID namespace asks for the host\'s: refused, naming it', () => {
  refuseWhatAVmCannotGive(spec(ALL), true);
  refused(() => refuseWhatAVmCannotGive(spec(ns('pid', 'ipc', 'uts', 'mount')), true),
    /^linux\.namespaces: no network namespace, i\.e\. the host network \(CRI namespace_options\.network = NODE, `ctr run --net-host`\): not supported/);
  refused(() => refuseWhatAVmCannotGive(spec(ns('pid', 'uts', 'mount', 'network')), true), /no ipc namespace, i\.e\. the host IPC \(CRI namespace_options\.ipc = NODE\)/);
  refused(() => refuseWhatAVmCannotGive(spec(ns('ipc', 'uts', 'mount', 'network')), true), /no pid namespace, i\.e\. the host PID \(CRI namespace_options\.pid = NODE\)/);
  // Namespaces joined by path (a CRI workload joining the pause container's) count as present.
  refuseWhatAVmCannotGive(spec([{ type: 'network', path: '/var/run/netns/cni-1' }, { type: 'ipc', path: '/proc/9/ns/ipc' }, { type: 'pid', path: '/proc/9/ns/pid' }]), true);
});

test('a later container of the pod is not held to the pod\'s namespaces (it joins the sandbox\'s)', () => {
  refuseWhatAVmCannotGive(spec(ns('mount', 'uts')), false);
});

test('rshared / shared mount propagation is refused, naming the mount; rslave and private are accepted', () => {
  const m = (options: string[]) => ({ destination: '/data', type: 'bind', source: '/host/data', options });
  refuseWhatAVmCannotGive(spec(ALL, [m(['rbind', 'rslave'])]), false);
  refuseWhatAVmCannotGive(spec(ALL, [m(['rbind', 'rprivate', 'ro'])]), true);
  refused(() => refuseWhatAVmCannotGive(spec(ALL, [{ destination: '/proc', type: 'proc' }, m(['rbind', 'rshared'])]), false),
    /^mounts\[1\] \(\/data\): propagation rshared \(CRI Bidirectional\) is not supported/);
  refused(() => refuseWhatAVmCannotGive(spec(ALL, [m(['bind', 'shared'])]), true), /propagation shared/);
});

test('specs without namespaces or mounts are left to the runtime', () => {
  refuseWhatAVmCannotGive({ process: {} }, true);
  refuseWhatAVmCannotGive(null, true);
  refuseWhatAVmCannotGive({ linux: {}, mounts: [{ destination: '/x' }] }, true);
});
