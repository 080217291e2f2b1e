// Command-line parsing for kata-crictl, in crictl's shape:
//   kata-crictl [global flags] COMMAND [command flags] ARGS…
// Long flags take `--name value` or `--name=value`; short ones `-x value`,
// `-xvalue` (value flags) or a cluster of booleans (`-aq`). A command's flags
// may come before or after its positional arguments, except for commands that
// stop at their first argument (exec: everything after the container id is
// the command line). `--` ends flag parsing. Global flags are also accepted
// after the command when the command has no flag of that name.

export type FlagType = 'bool' | 'string' | 'int' | 'duration' | 'strings';

export interface FlagSpec {
  /** Long name without dashes; the key in the parsed result. */
  name: string;
  short?: string;
  /** Other long names (e.g. "sync" for exec's "-s"). */
  aliases?: string[];
  type: FlagType;
  /** Value when the flag is absent (bool: false, strings: [], others: undefined). */
  default?: string | number | boolean;
  help: string;
  /** Placeholder in the help text. */
  arg?: string;
}

export interface CommandSpec {
  name: string;
  aliases?: string[];
  /** Positional synopsis, e.g. "POD-ID CONTAINER-CONFIG POD-CONFIG". */
  synopsis: string;
  summary: string;
  flags: FlagSpec[];
  minArgs: number;
  /** Undefined: any number. */
  maxArgs?: number;
  /** Flags end at the first positional argument (exec). */
  stopAtFirstArg?: boolean;
}

export type FlagValues = Record<string, string | number | boolean | string[] | undefined>;

export interface Parsed {
  global: FlagValues;
  /** Canonical command name, or undefined when none was given. */
  command: string | undefined;
  flags: FlagValues;
  args: string[];
  help: boolean;
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * A Go-style duration ("10s", "1m30s", "500ms", "2h") or a plain number of
 * seconds, in milliseconds.
 */
export function parseDuration(s: string): number {
  const t = s.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Math.round(Number(t) * 1000);
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  for (let m = re.exec(t); m; m = re.exec(t)) {
    total += Number(m[1]) * unit[m[2]!]!;
    pos = re.lastIndex;
  }
  if (pos === 0 || pos !== t.length) throw new UsageError(`invalid duration "${s}" (e.g. 10s, 500ms, 2m)`);
  return Math.round(total);
}

function parseIntFlag(name: string, v: string): number {
  if (!/^-?\d+$/.test(v.trim())) throw new UsageError(`invalid value "${v}" for --${name}: an integer is required`);
  return Number(v);
}

function convert(spec: FlagSpec, raw: string, into: FlagValues): void {
  switch (spec.type) {
    case 'int':
      into[spec.name] = parseIntFlag(spec.name, raw);
      break;
    case 'duration':
      into[spec.name] = parseDuration(raw);
      break;
    case 'strings':
      into[spec.name] = [...((into[spec.name] as string[] | undefined) ?? []), raw];
      break;
    case 'bool':
      if (!/^(true|false|1|0)$/i.test(raw)) throw new UsageError(`invalid value "${raw}" for --${spec.name}: true or false`);
      into[spec.name] = /^(true|1)$/i.test(raw);
      break;
    default:
      into[spec.name] = raw;
  }
}

function defaults(specs: FlagSpec[]): FlagValues {
  const v: FlagValues = {};
  for (const s of specs) {
    if (s.default !== undefined) v[s.name] = s.default;
    else if (s.type === 'bool') v[s.name] = false;
    else if (s.type === 'strings') v[s.name] = [];
  }
  return v;
}

function findLong(specs: FlagSpec[], name: string): FlagSpec | undefined {
  return specs.find((s) => s.name === name || s.aliases?.includes(name));
}

function findShort(specs: FlagSpec[], c: string): FlagSpec | undefined {
  return specs.find((s) => s.short === c);
}

/**
 * Try to consume argv[i] as a flag of `layers` (searched in order). Returns
 * how many elements were consumed (0: not a known flag of any layer).
 */
function takeFlag(argv: string[], i: number, layers: { specs: FlagSpec[]; into: FlagValues }[], onHelp: () => void): number {
  const a = argv[i]!;
  if (a === '-h' || a === '--help') {
    onHelp();
    return 1;
  }
  if (a.startsWith('--')) {
    const eq = a.indexOf('=');
    const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    for (const l of layers) {
      const spec = findLong(l.specs, name);
      if (!spec) continue;
      if (spec.type === 'bool') {
        if (eq >= 0) convert(spec, a.slice(eq + 1), l.into);
        else l.into[spec.name] = true;
        return 1;
      }
      if (eq >= 0) {
        convert(spec, a.slice(eq + 1), l.into);
        return 1;
      }
      if (i + 1 >= argv.length) throw new UsageError(`flag needs an argument: --${name}`);
      convert(spec, argv[i + 1]!, l.into);
      return 2;
    }
    return 0;
  }
  // -x, -xVALUE, -abc (booleans), -x=VALUE
  const body = a.slice(1);
  for (const l of layers) {
    const first = findShort(l.specs, body[0]!);
    if (!first) continue;
    if (first.type !== 'bool') {
      let rest = body.slice(1);
      if (rest.startsWith('=')) rest = rest.slice(1);
      if (rest) {
        convert(first, rest, l.into);
        return 1;
      }
      if (i + 1 >= argv.length) throw new UsageError(`flag needs an argument: -${first.short}`);
      convert(first, argv[i + 1]!, l.into);
      return 2;
    }
    // a cluster of booleans, all of this layer
    const specs = [...body].map((c) => findShort(l.specs, c));
    if (specs.every((s) => s && s.type === 'bool')) {
      for (const s of specs) l.into[s!.name] = true;
      return 1;
    }
    if (body.length > 1 && body[1] === '=') {
      convert(first, body.slice(2), l.into);
      return 1;
    }
  }
  return 0;
}

const isFlag = (a: string) => a.length > 1 && a.startsWith('-') && a !== '-';

export function parseArgs(argv: string[], globalFlags: FlagSpec[], commands: CommandSpec[]): Parsed {
  const global = defaults(globalFlags);
  let help = false;
  let i = 0;
  // global flags before the command
  while (i < argv.length && isFlag(argv[i]!)) {
    if (argv[i] === '--') {
      i++;
      break;
    }
    const n = takeFlag(argv, i, [{ specs: globalFlags, into: global }], () => (help = true));
    if (!n) throw new UsageError(`unknown global flag ${argv[i]}`);
    i += n;
  }
  if (i >= argv.length) return { global, command: undefined, flags: {}, args: [], help };
  const word = argv[i++]!;
  if (word === 'help') {
    const target = argv[i] ? commands.find((c) => c.name === argv[i] || c.aliases?.includes(argv[i]!)) : undefined;
    return { global, command: target?.name, flags: {}, args: [], help: true };
  }
  const cmd = commands.find((c) => c.name === word || c.aliases?.includes(word));
  if (!cmd) throw new UsageError(`unknown command "${word}" (see kata-crictl help)`);
  const flags = defaults(cmd.flags);
  const args: string[] = [];
  const layers = [
    { specs: cmd.flags, into: flags },
    { specs: globalFlags, into: global },
  ];
  let flagsDone = false;
  while (i < argv.length) {
    const a = argv[i]!;
    if (flagsDone || !isFlag(a)) {
      args.push(a);
      i++;
      if (cmd.stopAtFirstArg) flagsDone = true;
      continue;
    }
    if (a === '--') {
      flagsDone = true;
      i++;
      continue;
    }
    const n = takeFlag(argv, i, layers, () => (help = true));
    if (!n) throw new UsageError(`unknown flag ${a} for "${cmd.name}" (see kata-crictl help ${cmd.name})`);
    i += n;
  }
  if (!help) {
    if (args.length < cmd.minArgs) throw new UsageError(`"${cmd.name}" needs ${cmd.synopsis || 'arguments'} (see kata-crictl help ${cmd.name})`);
    if (cmd.maxArgs !== undefined && args.length > cmd.maxArgs) {
      throw new UsageError(`"${cmd.name}" takes ${cmd.maxArgs === 0 ? 'no arguments' : `at most ${cmd.maxArgs} argument(s)`}, got ${args.length}`);
    }
  }
  return { global, command: cmd.name, flags, args, help };
}

function flagLine(f: FlagSpec): string {
  const names = [f.short ? `-${f.short}` : '', `--${f.name}`, ...(f.aliases ?? []).map((a) => `--${a}`)].filter(Boolean).join(', ');
  const arg = f.type === 'bool' ? '' : ` ${f.arg ?? 'value'}`;
  const def = f.default !== undefined && f.type !== 'bool' ? ` (default ${f.default})` : '';
  return `   ${(names + arg).padEnd(32)} ${f.help}${def}`;
}

export function usage(globalFlags: FlagSpec[], commands: CommandSpec[], command?: string): string {
  const cmd = command ? commands.find((c) => c.name === command) : undefined;
  if (cmd) {
    const lines = [`Usage: kata-crictl ${cmd.name} [flags] ${cmd.synopsis}`.trimEnd(), '', cmd.summary];
    if (cmd.aliases?.length) lines.push('', `Aliases: ${cmd.aliases.join(', ')}`);
    if (cmd.flags.length) lines.push('', 'Flags:', ...cmd.flags.map(flagLine));
    return lines.join('\n') + '\n';
  }
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  return [
    'kata-crictl: a crictl-compatible client of the Kubernetes CRI (runtime.v1) served by containerd',
    '',
    'Usage: kata-crictl [global flags] COMMAND [flags] [ARGS]',
    '',
    'Commands:',
    ...commands.map((c) => `   ${c.name.padEnd(width)}${c.summary}${c.aliases?.length ? ` (alias: ${c.aliases.join(', ')})` : ''}`),
    `   ${'help'.padEnd(width)}Show help for a command`,
    '',
    'Global flags:',
    ...globalFlags.map(flagLine),
    '',
  ].join('\n');
}
