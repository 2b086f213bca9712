// Types of the kata SDK for JavaScript and TypeScript plugins (index.js).
// Hand-written over the WIT types generated into wit.d.ts.

/// <reference path="./wit.d.ts" />

import type {
  Attachment,
  ChannelInfo,
  ConversationKind,
  Frame,
  IngressMode,
  Message as WitMessage,
  OutboundMessage,
  StreamKind,
  ToolSpec,
} from "kata:plugin/types@0.1.2";

export { encodeUtf8, decodeUtf8, ChannelError, ToolError, HttpError, Response } from "./core.js";
import type { Response } from "./core.js";

export type { Attachment, ChannelInfo, ConversationKind, Frame, IngressMode, OutboundMessage, StreamKind, ToolSpec };

/** Write a line to kata's log, tagged with the plugin's name. */
export const log: {
  trace(message: string): void;
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
};

/** The plugin's `config = { ... }` from kata.toml (text values). */
export const config: {
  /** The value of `key`, or undefined when it is not set. */
  get(key: string): string | undefined;
  /** The value of `key`; throws ChannelError.invalidConfig naming the key when it is not set. */
  require(key: string, hint?: string): string;
};

/** State in the workspace's database, private to the plugin. */
export const state: {
  get(key: string): Uint8Array | undefined;
  getText(key: string): string | undefined;
  getJson<T = unknown>(key: string): T | undefined;
  /** Bytes or text (keys up to 256 bytes, values up to 1 MiB); throws an Error when kata cannot store it. */
  set(key: string, value: Uint8Array | string): void;
  setJson(key: string, value: unknown): void;
  delete(key: string): void;
  keys(prefix?: string): string[];
};

/** Milliseconds since the Unix epoch. */
export function nowMs(): number;

/** An HTTP request. */
export interface RequestOptions {
  method?: string;
  url: string;
  /** Header values may hold `{{secret:NAME}}` placeholders. */
  headers?: Record<string, string> | [string, string][];
  /** A string is sent as UTF-8. */
  body?: Uint8Array | string;
  /** Sent as JSON with `content-type: application/json`. */
  json?: unknown;
  /** Fail when the first byte, or the next chunk, takes longer. */
  timeoutMs?: number;
  /** Refuse larger response bodies (default 16 MiB). */
  maxBodyBytes?: number;
}

/** Send a request and read the whole response; throws HttpError when there is none. */
export function request(options: RequestOptions | string): Response;

/** HTTP through kata (synchronous). */
export const http: {
  request(options: RequestOptions | string): Response;
  get(url: string, options?: Omit<RequestOptions, "url" | "method">): Response;
  post(url: string, options?: Omit<RequestOptions, "url" | "method">): Response;
  put(url: string, options?: Omit<RequestOptions, "url" | "method">): Response;
  delete(url: string, options?: Omit<RequestOptions, "url" | "method">): Response;
};

/** Read a whole file from a directory kata.toml grants (`files`); throws an Error otherwise. */
export function readFile(path: string): Uint8Array;
/** Read a granted file as UTF-8 text. */
export function readTextFile(path: string): string;

/** A message for kata's inbox; what is left out gets the defaults of `message()`. */
export interface MessageInit {
  id: string;
  conversation: string;
  sender: string;
  text?: string;
  thread?: string | null;
  senderName?: string | null;
  attachments?: Partial<Attachment>[];
  timestampMs?: number;
  raw?: string | null;
  conversationKind?: ConversationKind;
  mentioned?: boolean;
}

/** A complete WIT message: direct, mentioned, no thread, no attachments, timestamp now unless given. */
export function message(m: MessageInit): WitMessage;

/** What `poll` returns. */
export interface PollResult {
  messages?: MessageInit[];
  /** The cursor for the next poll; undefined keeps the current one. */
  cursor?: string | null;
  /** When to poll again; undefined lets kata decide. */
  nextPollMs?: number | null;
}

/** A stream for kata to open (`subscribe`). */
export interface SubscriptionInit {
  kind: StreamKind;
  url: string;
  headers?: Record<string, string> | [string, string][];
  /** Strings are text frames, Uint8Arrays binary ones. */
  initialFrames?: (string | Uint8Array | Frame)[];
  heartbeatMs?: number | null;
}

/** An outbound message, with `undefined` for absent options. */
export interface Outbound {
  conversation: string;
  thread?: string;
  replyTo?: string;
  text: string;
  idempotencyKey: string;
}

/** A channel's implementation; `this` is the object `connect` returned (merged over the implementation). */
export interface ChannelImpl<S extends object = {}> {
  describe(): { name: string; version?: string; ingress?: IngressMode[] };
  connect?(): S | void;
  poll(this: ChannelImpl<S> & S, cursor: string | undefined): PollResult;
  send(this: ChannelImpl<S> & S, message: Outbound): string | { id?: string; frames?: (string | Uint8Array | Frame)[] } | void;
  subscribe?(this: ChannelImpl<S> & S): SubscriptionInit;
  onFrame?(this: ChannelImpl<S> & S, frame: Frame): { messages?: MessageInit[]; replies?: (string | Uint8Array | Frame)[] };
  disconnect?(this: ChannelImpl<S> & S): void;
}

/** The `channel` export kata calls. */
export type ChannelExport = Omit<typeof import("kata:plugin/channel@0.1.2"), "default">;

/** Turn a channel implementation into the `channel` export (errors become channel errors). */
export function defineChannel<S extends object = {}>(impl: ChannelImpl<S>): ChannelExport;

/** One tool. */
export interface ToolImpl<A = any> {
  name: string;
  description?: string;
  /** JSON Schema of the arguments (an object, or its JSON text). */
  argsSchema?: object | string;
  /** Gets the parsed arguments; returns a string (as is) or a value (sent as JSON). */
  run(args: A): unknown;
}

/** Turn tools into the `tools` export. */
export function defineTools(tools: ToolImpl[]): Omit<typeof import("kata:plugin/tools@0.1.2"), "default">;

/** A service's implementation. */
export interface ServiceImpl {
  start?(): void;
  /** Milliseconds until the next tick. */
  tick(): number;
  stop?(): void;
}

/** Turn a service into the `service` export. */
export function defineService(impl: ServiceImpl): Omit<typeof import("kata:plugin/service@0.1.2"), "default">;
