/** The shim's version (Connect's `version`, `-v`). */
export const SHIM_VERSION = '0.1.0';
