export { TtrpcClient, type CallOptions, type ConnectOptions, type MessageCodec } from './client.js';
export { TtrpcServer, unary, type CallContext, type Handler, type ServiceHandlers, type ServerOptions } from './server.js';
export { FrameDecoder, encodeFrame, MessageType, Flags, HEADER_LENGTH, MESSAGE_LENGTH_MAX } from './frame.js';
export type { Metadata } from './messages.js';
