// Types of core.js: the kata SDK parts that need no host. Hand-written; the
// WIT's own types are generated into wit.d.ts (sdk/js/generate.sh).

import type { ChannelError as WitChannelError, ToolError as WitToolError } from "kata:plugin/types@0.1.2";

/** UTF-8 encode a string (QuickJS has no TextEncoder). */
export function encodeUtf8(text: string): Uint8Array;
/** UTF-8 decode bytes; invalid sequences become U+FFFD. */
export function decodeUtf8(bytes: Uint8Array | ArrayLike<number>): string;
/** Bytes from a Uint8Array, ArrayBuffer, number array or string (UTF-8). */
export function toBytes(value: Uint8Array | ArrayBuffer | number[] | string | null | undefined): Uint8Array | null;
/** The `err` value of a failed WIT import call (componentize-qjs puts it in `Error.payload`). */
export function payload(e: unknown): unknown;
/** A readable text for anything thrown. */
export function errorText(e: unknown): string;

/** A channel error kata understands; throw it from a channel's methods. */
export class ChannelError extends Error {
  constructor(tag: WitChannelError["tag"], val?: string | number, message?: string);
  readonly tag: WitChannelError["tag"];
  readonly val: string | number | undefined;
  /** The credentials were refused (e.g. HTTP 401). */
  static authFailed(text: string): ChannelError;
  /** Slow down; kata retries after this many milliseconds. */
  static rateLimited(retryAfterMs: number): ChannelError;
  /** Transient: kata retries with backoff. */
  static network(text: string): ChannelError;
  /** kata.toml's config for this plugin is missing or wrong; name the key. */
  static invalidConfig(text: string): ChannelError;
  /** The plugin does not implement this operation. */
  static unsupported(): ChannelError;
  /** Anything retrying will not fix. */
  static fatal(text: string): ChannelError;
  /** Anything thrown as a ChannelError: HttpError "denied" → invalidConfig, "transport" → network, else fatal. */
  static from(e: unknown): ChannelError;
  /** The WIT value `{ tag, val }`. */
  toWit(): WitChannelError;
}

/** A tool error; throw it from a tool's `run`. */
export class ToolError extends Error {
  constructor(tag: WitToolError["tag"], val: string);
  readonly tag: WitToolError["tag"];
  readonly val: string;
  static unknownTool(name: string): ToolError;
  static invalidArgs(text: string): ToolError;
  static failed(text: string): ToolError;
  static from(e: unknown): ToolError;
  toWit(): WitToolError;
}

/** Why an HTTP request got no response. */
export type HttpErrorKind = "invalid-url" | "invalid-request" | "denied" | "transport" | "body-too-large";

/**
 * Thrown by `http.*` when there is no response. `kind` is "denied" when
 * kata's workspace policy refused the host; `message` is kata's sentence
 * (it names the URL without its query).
 */
export class HttpError extends Error {
  constructor(kind: HttpErrorKind, message: string);
  readonly kind: HttpErrorKind;
  /** Whether kata's policy refused the request. */
  readonly denied: boolean;
}

/** A complete HTTP response (any status). */
export class Response {
  constructor(status: number, headers: [string, string][], body: Uint8Array);
  readonly status: number;
  /** `[name, value]` pairs; names are lowercase. */
  readonly headers: [string, string][];
  readonly body: Uint8Array;
  /** Whether the status is 2xx. */
  readonly ok: boolean;
  /** The first value of header `name` (any case). */
  header(name: string): string | undefined;
  /** The body as UTF-8 text. */
  text(): string;
  /** The body parsed as JSON. */
  json<T = unknown>(): T;
}
