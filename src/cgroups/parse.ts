/**
 * Parsers of the kernel's cgroup files, shared by the host (src/cgroups/host.ts)
 * and the guest agent (src/agent/cgroup.ts): pure functions of text, no I/O.
 */

export interface CgroupMount {
  /** Mount point, e.g. /sys/fs/cgroup/memory or /sys/fs/cgroup. */
  mountPoint: string;
  /** Root of the mount inside the hierarchy (mountinfo's 4th field; / unless namespaced). */
  root: string;
  version: 1 | 2;
  /** v1: the controllers of this hierarchy (e.g. ['cpu', 'cpuacct']; named hierarchies left out); v2: []. */
  controllers: string[];
}

/** The cgroup and cgroup2 mounts in /proc/<pid>/mountinfo text. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const fstype = right[0];
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    const superOpts = (right[2] ?? '').split(',');
    out.push({
      mountPoint: unescapeMount(left[4] ?? ''),
      root: unescapeMount(left[3] ?? '/'),
      version: fstype === 'cgroup2' ? 2 : 1,
      controllers: fstype === 'cgroup' ? superOpts.filter((o) => o !== 'rw' && o !== 'ro' && !o.includes('=')) : [],
    });
  }
  return out;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** /proc/<pid>/cgroup text: each hierarchy's controllers ([] for v2 and named ones) and the path. */
export function parseProcCgroup(text: string): Array<{ controllers: string[]; path: string }> {
  const out: Array<{ controllers: string[]; path: string }> = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    out.push({ controllers: m[2] === '' ? [] : m[2]!.split(','), path: m[3]! });
  }
  return out;
}
