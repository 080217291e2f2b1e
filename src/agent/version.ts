/** The agent's version, reported by Check (kept in step with package.json). */
export const AGENT_VERSION = '0.1.0';

/** The ttrpc service name of the agent protocol (proto/agent/agent.proto). */
export const AGENT_SERVICE = 'kata.agent.v1.AgentService';
