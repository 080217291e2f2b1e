/**
 * A VM or CRI suite's skip for a missing prerequisite. On a developer's
 * machine the suite is skipped with the reason; under CI (CI=true, as
 * `.ci/run` runs) a skip would leave the run green while a suite never ran,
 * so it fails instead, at load, naming what is missing.
 */
export function skipUnlessCi(canRun: boolean, reason: string): false | string {
  if (canRun) return false;
  if (process.env.CI === 'true') throw new Error(`CI=true: this suite must run, but it ${reason}`);
  return reason;
}
