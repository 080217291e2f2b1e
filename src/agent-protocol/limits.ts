/**
 * Bounds the host and the guest both hold to: the VM layer never starts or
 * grows a VM past them, and the agent refuses a request past them, naming
 * the field.
 */

/** The most vCPUs a pod VM has (QEMU's x86 limit without x2APIC tricks). */
export const MAX_VCPUS = 255;
