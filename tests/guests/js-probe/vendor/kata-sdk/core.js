// The parts of the kata SDK that need no host: text encoding, error types,
// the HTTP response. Plain JavaScript that also runs under Node, so a
// plugin's own tests (`npm test`) can use them. index.js re-exports all of it.

// ---------------------------------------------------------------- text

/** UTF-8 encode a string (QuickJS has no TextEncoder). */
export function encodeUtf8(text) {
  const s = String(text);
  const out = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

/** UTF-8 decode bytes; invalid sequences become U+FFFD. */
export function decodeUtf8(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes ?? []);
  let out = "";
  let chunk = [];
  const flush = () => {
    out += String.fromCharCode.apply(null, chunk);
    chunk = [];
  };
  for (let i = 0; i < b.length; ) {
    const c = b[i];
    let cp = 0xfffd;
    let n = 1;
    if (c < 0x80) cp = c;
    else if (c >= 0xc2 && c < 0xe0 && i + 1 < b.length && (b[i + 1] & 0xc0) === 0x80) {
      cp = ((c & 31) << 6) | (b[i + 1] & 63);
      n = 2;
    } else if (c >= 0xe0 && c < 0xf0 && i + 2 < b.length && (b[i + 1] & 0xc0) === 0x80 && (b[i + 2] & 0xc0) === 0x80) {
      cp = ((c & 15) << 12) | ((b[i + 1] & 63) << 6) | (b[i + 2] & 63);
      n = 3;
      if (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000)) cp = 0xfffd;
    } else if (c >= 0xf0 && c < 0xf5 && i + 3 < b.length && (b[i + 1] & 0xc0) === 0x80 && (b[i + 2] & 0xc0) === 0x80 && (b[i + 3] & 0xc0) === 0x80) {
      cp = ((c & 7) << 18) | ((b[i + 1] & 63) << 12) | ((b[i + 2] & 63) << 6) | (b[i + 3] & 63);
      n = 4;
      if (cp < 0x10000 || cp > 0x10ffff) cp = 0xfffd;
    }
    i += n;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      chunk.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
    } else chunk.push(cp);
    if (chunk.length > 8000) flush();
  }
  flush();
  return out;
}

export function toBytes(value) {
  if (value === undefined || value === null) return null;
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (Array.isArray(value)) return Uint8Array.from(value);
  return encodeUtf8(String(value));
}

// ---------------------------------------------------------------- errors

// A WIT `result` import that returns `err(E)` throws an Error whose
// `payload` is E (componentize-qjs).
export function payload(e) {
  return e instanceof Error && e.payload !== undefined ? e.payload : e;
}

export function errorText(e) {
  e = payload(e);
  if (e instanceof Error) return e.message;
  if (typeof e === "string") return e;
  try {
    return JSON.stringify(e);
  } catch {
    return String(e);
  }
}

/**
 * A channel error kata understands. Throw one from a channel's methods:
 * `throw ChannelError.authFailed("token refused")`. kata retries `network`
 * and `rateLimited`, stops on `authFailed` and `invalidConfig` until the user
 * fixes kata.toml, and gives up on `fatal`.
 */
export class ChannelError extends Error {
  constructor(tag, val, message) {
    super(message ?? (val === undefined ? tag : `${tag}: ${val}`));
    this.name = "ChannelError";
    this.tag = tag;
    this.val = val;
  }
  static authFailed(text) {
    return new ChannelError("auth-failed", String(text));
  }
  static rateLimited(retryAfterMs) {
    return new ChannelError("rate-limited", Number(retryAfterMs), `rate limited: retry after ${retryAfterMs} ms`);
  }
  static network(text) {
    return new ChannelError("network", String(text));
  }
  static invalidConfig(text) {
    return new ChannelError("invalid-config", String(text));
  }
  static unsupported() {
    return new ChannelError("unsupported", undefined);
  }
  static fatal(text) {
    return new ChannelError("fatal", String(text));
  }
  /** Any thrown value as a ChannelError (what the SDK does with errors a channel throws). */
  static from(e) {
    if (e instanceof ChannelError) return e;
    if (e instanceof HttpError) {
      if (e.kind === "denied") {
        return ChannelError.invalidConfig(`${e.message}: grant its host in kata.toml [plugins.NAME] network`);
      }
      if (e.kind === "transport") return ChannelError.network(e.message);
      if (e.kind === "invalid-url") return ChannelError.invalidConfig(e.message);
      return ChannelError.fatal(e.message);
    }
    return ChannelError.fatal(errorText(e));
  }
  /** The WIT value: `{ tag, val }`. */
  toWit() {
    return this.val === undefined ? { tag: this.tag } : { tag: this.tag, val: this.val };
  }
}

/** A tool error: `throw ToolError.invalidArgs("text is required")`. */
export class ToolError extends Error {
  constructor(tag, val) {
    super(`${tag}: ${val}`);
    this.name = "ToolError";
    this.tag = tag;
    this.val = val;
  }
  static unknownTool(name) {
    return new ToolError("unknown-tool", String(name));
  }
  static invalidArgs(text) {
    return new ToolError("invalid-args", String(text));
  }
  static failed(text) {
    return new ToolError("failed", String(text));
  }
  static from(e) {
    if (e instanceof ToolError) return e;
    return ToolError.failed(errorText(e));
  }
  toWit() {
    return { tag: this.tag, val: this.val };
  }
}

// ---------------------------------------------------------------- http

/**
 * Why an HTTP request got no response. `kind` is "denied" when kata's
 * workspace policy refused the host (the message says so and names the URL),
 * "transport" for DNS, connection, TLS and timeouts, "invalid-url",
 * "invalid-request" or "body-too-large".
 */
export class HttpError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "HttpError";
    this.kind = kind;
  }
  /** Whether kata's policy refused the request. */
  get denied() {
    return this.kind === "denied";
  }
}

/** A complete HTTP response. */
export class Response {
  constructor(status, headers, body) {
    /** The status code. */
    this.status = status;
    /** `[name, value]` pairs; names are lowercase. */
    this.headers = headers;
    /** The body bytes. */
    this.body = body;
  }
  /** Whether the status is 2xx. */
  get ok() {
    return this.status >= 200 && this.status < 300;
  }
  /** The first value of header `name` (any case), or undefined. */
  header(name) {
    const n = String(name).toLowerCase();
    const found = this.headers.find(([k]) => k.toLowerCase() === n);
    return found ? found[1] : undefined;
  }
  /** The body as text (UTF-8). */
  text() {
    return decodeUtf8(this.body);
  }
  /** The body parsed as JSON. */
  json() {
    return JSON.parse(this.text());
  }
}

