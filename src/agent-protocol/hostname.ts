/**
 * The guest hostname CreateSandbox accepts, shared by the host (which passes
 * a pod's OCI hostname on only when it fits) and the agent (which refuses
 * anything else, naming the field).
 */
export const GUEST_HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/;
