export { AgentClient, AGENT_SERVICE_NAME, DEFAULT_CALL_TIMEOUT_MS, type AgentClientOptions, type AgentConnectOptions } from './client.js';
export { agentHandshake, type HandshakeOptions } from './handshake.js';
export type * from './types.js';
