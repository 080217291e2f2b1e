/** The value following each occurrence of `flag` in an argv (QEMU's `-smp 2`, `-device …`). */
export function flagValues(args: readonly string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === flag) out.push(args[i + 1]!);
  });
  return out;
}
