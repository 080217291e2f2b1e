/**
 * The grammar of a kernel module entry, shared by the host (the
 * configuration's `[agent.kata] kernel_modules`) and the guest agent
 * (CreateSandbox's kernel_modules): a module name and `param` or
 * `param=value` words that modprobe cannot misread.
 */
export const MODULE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$/;
export const MODULE_PARAM = /^[A-Za-z0-9_][A-Za-z0-9_-]*(=[A-Za-z0-9_.,:+-]*)?$/;

/** True for Kata's "name param=value …" entry (spaces between words). */
export function isModuleEntry(entry: string): boolean {
  if (/^\s/.test(entry)) return false;
  const [name = '', ...params] = entry.trimEnd().split(/\s+/);
  return MODULE_NAME.test(name) && params.every((p) => MODULE_PARAM.test(p));
}
