/**
 * test/e2e/cri-kata.test.ts again, with VM templates on ([factory] enable_template,
 * shared_fs = "virtio-9p", template_path under each private containerd's
 * temp dir): every pod's VM is a clone of a template made on first use.
 */
process.env.KATA_TS_TEST_TEMPLATES = '1';
await import('./cri-kata.test.js');
