/**
 * file:///abs/path: stdout and stderr appended to one file, created 0644
 * with its parent directories (0755), as containerd's runc shim does.
 */
import fs from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from '../log/index.js';
import { fsError } from './fs-error.js';
import { FileSink } from './sink.js';

const { O_WRONLY, O_APPEND, O_CREAT } = fs.constants;

/** One sink for both streams: closed once both ended it (or by close()). */
export async function openLogFile(path: string, log: Logger): Promise<FileSink> {
  try {
    await fs.promises.mkdir(dirname(path), { recursive: true, mode: 0o755 });
  } catch (err) {
    throw fsError('stdout', `log file directory ${dirname(path)}`, err);
  }
  let fh;
  try {
    fh = await fs.promises.open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644);
  } catch (err) {
    throw fsError('stdout', `log file ${path}`, err);
  }
  try {
    if (!(await fh.stat()).isFile()) {
      throw fsError('stdout', `log file ${path}`, Object.assign(new Error('not a regular file'), { code: 'EISDIR' }));
    }
  } catch (err) {
    await fh.close().catch(() => {});
    throw err;
  }
  return new FileSink(fh, `log file ${path}`, log, 2);
}
