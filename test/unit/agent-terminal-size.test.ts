/**
 * The size a terminal gets at CreateContainer / ExecProcess reaches both
 * places that set it before the process can read it (docs/agent.md,
 * Terminals): the OCI `consoleSize: {height, width}` that crun 1.8.1 applies
 * itself (config.json for `crun run`, the --process file for `crun exec`),
 * and the tty-helper's `--rows/--cols`. A fake runtime and a fake helper
 * (shell scripts) record what the agent hands them.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Container } from '../../src/agent/container.js';
import { OciRuntime } from '../../src/agent/runtime.js';
import { silentLogger } from '../../src/log/index.js';

// Records its argv, then runs the command after `--` (as the helper runs crun).
const FAKE_HELPER = `#!/bin/sh
printf '%s\\n' "$*" >> "$0.argv"
while [ "$1" != "--" ]; do shift; done
shift
exec "$@"
`;
// Keeps a copy of the --process file, writes its pid; `run` stays up (a
// running container), `exec` exits 0 at once.
const FAKE_RUNTIME = `#!/bin/sh
pidfile=; procfile=; cmd=
while [ $# -gt 0 ]; do
  case "$1" in
    --pid-file) pidfile=$2; shift ;;
    --process) procfile=$2; shift ;;
    run|exec) [ -z "$cmd" ] && cmd=$1 ;;
  esac
  shift
done
[ -n "$procfile" ] && cp "$procfile" "$0.process.json"
echo $$ > "$pidfile.tmp" && mv "$pidfile.tmp" "$pidfile"
[ "$cmd" = run ] && exec sleep 60
exit 0
`;

describe('agent terminal size', () => {
  let dir: string;
  let helper: string;
  let runtimePath: string;
  let container: Container | undefined;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kata-ttysize-'));
    helper = join(dir, 'tty-helper');
    runtimePath = join(dir, 'crun');
    writeFileSync(helper, FAKE_HELPER);
    writeFileSync(runtimePath, FAKE_RUNTIME);
    chmodSync(helper, 0o755);
    chmodSync(runtimePath, 0o755);
    mkdirSync(join(dir, 'rootfs', 'bin'), { recursive: true });
    mkdirSync(join(dir, 'sockets'));
    writeFileSync(join(dir, 'rootfs', 'bin', 'sleep'), '');
    chmodSync(join(dir, 'rootfs', 'bin', 'sleep'), 0o755);
  });
  after(() => {
    container?.init.killRuntime();
    rmSync(dir, { recursive: true, force: true });
  });

  it('puts consoleSize {height, width} in config.json and the exec process file, and --rows/--cols on the helper', async () => {
    const logger = silentLogger();
    let n = 0;
    container = await Container.create({
      runtime: new OciRuntime({ path: runtimePath, root: join(dir, 'state'), noPivot: false, logger }),
      ttyHelper: helper,
      cgroupParent: '/test',
      socketDir: join(dir, 'sockets'),
      nextSocketName: () => `s${++n}`,
      logger,
    }, {
      id: 'c1', bundleDir: join(dir, 'bundle'), rootfsPath: join(dir, 'rootfs'),
      spec: { ociVersion: '1.0.2', process: { args: ['sleep', '60'], cwd: '/', env: ['PATH=/bin'] }, root: { path: 'rootfs' } },
      terminal: true, stdin: false, rows: 33, cols: 77,
    });
    const config = JSON.parse(readFileSync(join(dir, 'bundle', 'config.json'), 'utf8')) as { process: Record<string, unknown> };
    assert.equal(config.process.terminal, true);
    assert.deepEqual(config.process.consoleSize, { height: 33, width: 77 });
    // The spec's oomScoreAdj is the spec's: the agent's -1000 is kept from containers by launchPrefix, not here.
    assert.equal('oomScoreAdj' in config.process, false);

    const initPid = await container.start();
    assert.ok(initPid > 1);
    await container.exec({
      execId: 'e1', terminal: true, stdin: false, rows: 40, cols: 100,
      process: { args: ['stty', 'size'], cwd: '/', env: ['PATH=/bin'] },
    });
    assert.equal((await container.process('e1').exited).status, 0);
    const proc = JSON.parse(readFileSync(`${runtimePath}.process.json`, 'utf8')) as Record<string, unknown>;
    assert.equal(proc.terminal, true);
    assert.deepEqual(proc.consoleSize, { height: 40, width: 100 });
    assert.deepEqual(proc.args, ['stty', 'size']);
    assert.equal('oomScoreAdj' in proc, false);

    const argv = readFileSync(`${helper}.argv`, 'utf8').trim().split('\n');
    assert.equal(argv.length, 2, argv.join('\n'));
    assert.match(argv[0]!, /^--socket \S+\/sockets\/s1 --rows 33 --cols 77 --no-stdin -- \S+\/crun .* run .*--console-socket \S+\/sockets\/s1 c1$/);
    assert.match(argv[1]!, /^--socket \S+\/sockets\/s2 --rows 40 --cols 100 --no-stdin -- \S+\/crun .* exec --process \S+ .*--console-socket \S+\/sockets\/s2 c1$/);

    // No size given: neither consoleSize nor --rows/--cols (crun then leaves the pty as it is).
    await container.exec({ execId: 'e2', terminal: true, stdin: false, process: { args: ['stty', 'size'], cwd: '/', env: ['PATH=/bin'], oomScoreAdj: 500 } });
    assert.equal((await container.process('e2').exited).status, 0);
    assert.equal((JSON.parse(readFileSync(`${runtimePath}.process.json`, 'utf8')) as { oomScoreAdj?: number }).oomScoreAdj, 500, 'a given value is kept');
    assert.equal('consoleSize' in (JSON.parse(readFileSync(`${runtimePath}.process.json`, 'utf8')) as object), false);
    assert.doesNotMatch(readFileSync(`${helper}.argv`, 'utf8').trim().split('\n')[2]!, /--rows|--cols/);
  });
});
