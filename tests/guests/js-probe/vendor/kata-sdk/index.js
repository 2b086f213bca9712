// The kata SDK for JavaScript and TypeScript plugins (QuickJS, built by
// `kata plugin build`). Vendored into each project as vendor/kata-sdk/ by
// `kata plugin new`; the types are in index.d.ts next to this file.
//
//   import { defineChannel, http, config, log, message, ChannelError } from "../vendor/kata-sdk/index.js";
//
// Everything here is synchronous: the plugin runs one call at a time and
// HTTP blocks until the whole response is read.

import host from "kata:plugin/host@0.1.2";
import kataHttp from "kata:js/http@0.1.0";
import preopens from "wasi:filesystem/preopens@0.2.12";

import {
  encodeUtf8,
  decodeUtf8,
  toBytes,
  payload,
  errorText,
  ChannelError,
  ToolError,
  HttpError,
  Response,
} from "./core.js";

export { encodeUtf8, decodeUtf8, ChannelError, ToolError, HttpError, Response };

// ---------------------------------------------------------------- host

/** Write a line to kata's log (tagged with the plugin's name). */
export const log = {
  trace: (message) => host.log("trace", String(message)),
  debug: (message) => host.log("debug", String(message)),
  info: (message) => host.log("info", String(message)),
  warn: (message) => host.log("warn", String(message)),
  error: (message) => host.log("error", String(message)),
};

/** The plugin's `config = { ... }` from kata.toml (text values). */
export const config = {
  /** The value of `key`, or undefined when it is not set. */
  get(key) {
    return host.configGet(key) ?? undefined;
  },
  /** The value of `key`; throws ChannelError.invalidConfig naming the key when it is not set. */
  require(key, hint) {
    const value = host.configGet(key);
    if (value === null || value === undefined || value === "") {
      throw ChannelError.invalidConfig(`set ${key} in this plugin's config in kata.toml${hint ? ` (${hint})` : ""}`);
    }
    return value;
  },
};

/** State kept in the workspace's database, private to the plugin. */
export const state = {
  /** The bytes stored under `key`, or undefined. */
  get(key) {
    const v = host.stateGet(key);
    return v === null || v === undefined ? undefined : toBytes(v);
  },
  /** The text stored under `key`, or undefined. */
  getText(key) {
    const v = state.get(key);
    return v === undefined ? undefined : decodeUtf8(v);
  },
  /** The JSON value stored under `key` with setJson, or undefined. */
  getJson(key) {
    const v = state.getText(key);
    return v === undefined ? undefined : JSON.parse(v);
  },
  /** Store bytes or text (keys up to 256 bytes, values up to 1 MiB); throws an Error when kata cannot. */
  set(key, value) {
    try {
      host.stateSet(key, toBytes(value) ?? new Uint8Array());
    } catch (e) {
      throw new Error(`cannot store state ${key}: ${errorText(e)}`);
    }
  },
  /** Store a value as JSON. */
  setJson(key, value) {
    state.set(key, JSON.stringify(value));
  },
  /** Remove a key (no error when it is not there). */
  delete(key) {
    host.stateDelete(key);
  },
  /** The keys that start with `prefix`, in byte order (at most 1000). */
  keys(prefix = "") {
    return host.stateKeys(prefix);
  },
};

/** Milliseconds since the Unix epoch (a number). */
export function nowMs() {
  return Number(host.nowMs());
}

/**
 * Send an HTTP request through kata and read the whole response (any status).
 * The URL's path and query and header values may hold `{{secret:NAME}}`
 * placeholders; kata fills them in for hosts the secret is granted to. Throws
 * HttpError when there is no response.
 *
 *   const r = http.request({ method: "POST", url, headers: { authorization: "Bearer {{secret:token}}" }, json: { text } });
 */
export function request(options) {
  const o = typeof options === "string" ? { url: options } : options;
  let headers = [];
  if (Array.isArray(o.headers)) headers = o.headers.map(([k, v]) => [String(k), String(v)]);
  else if (o.headers) headers = Object.entries(o.headers).map(([k, v]) => [k, String(v)]);
  let body = toBytes(o.body);
  if (o.json !== undefined) {
    body = encodeUtf8(JSON.stringify(o.json));
    if (!headers.some(([k]) => k.toLowerCase() === "content-type")) headers.push(["content-type", "application/json"]);
  }
  let r;
  try {
    r = kataHttp.send({
      method: (o.method ?? "GET").toUpperCase(),
      url: String(o.url),
      headers,
      body,
      timeoutMs: o.timeoutMs ?? null,
      maxBodyBytes: o.maxBodyBytes ?? null,
    });
  } catch (e) {
    const p = payload(e);
    if (p && typeof p === "object" && "kind" in p) throw new HttpError(p.kind, p.message);
    throw new HttpError("transport", errorText(e));
  }
  return new Response(r.status, r.headers, toBytes(r.body));
}

/** HTTP helpers: `http.get(url, options)`, `http.post(url, options)`, `http.request(options)`. */
export const http = {
  request,
  get: (url, options = {}) => request({ ...options, method: "GET", url }),
  post: (url, options = {}) => request({ ...options, method: "POST", url }),
  put: (url, options = {}) => request({ ...options, method: "PUT", url }),
  delete: (url, options = {}) => request({ ...options, method: "DELETE", url }),
};

// ---------------------------------------------------------------- files

/**
 * Read a whole file from a directory kata.toml grants the plugin
 * (`files = [...]`); throws an Error saying why otherwise (a plugin has no
 * files at all by default).
 */
export function readFile(path) {
  const p = String(path);
  let best = null;
  for (const [dir, name] of preopens.getDirectories()) {
    const base = name.endsWith("/") && name.length > 1 ? name.slice(0, -1) : name;
    if (p === base || p.startsWith(base === "/" ? "/" : base + "/")) {
      if (!best || base.length > best[1].length) best = [dir, base];
    }
  }
  if (!best) throw new Error(`${p}: not in a directory granted to this plugin (kata.toml files)`);
  const [dir, base] = best;
  const rel = p === base ? "." : p.slice(base === "/" ? 1 : base.length + 1);
  try {
    const fd = dir.openAt({ symlinkFollow: true }, rel, {}, { read: true });
    const chunks = [];
    let total = 0;
    let offset = 0;
    for (;;) {
      const [chunk, end] = fd.read(65536, offset);
      const bytes = toBytes(chunk);
      chunks.push(bytes);
      total += bytes.length;
      offset += bytes.length;
      if (end || bytes.length === 0) break;
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  } catch (e) {
    const code = payload(e);
    throw new Error(`${p}: ${typeof code === "string" ? code : (code && code.tag) || errorText(code)}`);
  }
}

/** Read a file as text (UTF-8). */
export function readTextFile(path) {
  return decodeUtf8(readFile(path));
}

// ---------------------------------------------------------------- messages

/**
 * A message for kata's inbox, with defaults for what is not given: a direct
 * conversation that addresses the agent, no thread, no attachments,
 * timestamp now.
 */
export function message(m) {
  return {
    id: String(m.id),
    conversation: String(m.conversation),
    thread: m.thread ?? null,
    sender: String(m.sender),
    senderName: m.senderName ?? null,
    text: String(m.text ?? ""),
    attachments: (m.attachments ?? []).map((a) => ({
      name: a.name ?? "",
      mimeType: a.mimeType ?? "application/octet-stream",
      url: a.url ?? null,
      size: a.size ?? null,
    })),
    timestampMs: m.timestampMs ?? nowMs(),
    raw: m.raw ?? null,
    conversationKind: m.conversationKind ?? "direct",
    mentioned: m.mentioned ?? true,
  };
}

function frame(f) {
  if (typeof f === "string") return { tag: "text", val: f };
  if (f instanceof Uint8Array) return { tag: "binary", val: f };
  return f;
}

function guarded(fn, convert) {
  return (...args) => {
    try {
      return fn(...args);
    } catch (e) {
      throw convert(e).toWit();
    }
  };
}

/**
 * Turn a channel implementation into the `channel` export kata calls:
 *
 *   export const channel = defineChannel({
 *     describe: () => ({ name: "mychat", version: "0.1.0" }),
 *     connect() { ... },            // optional
 *     poll(cursor) { return { messages: [...], cursor: "42" }; },
 *     send(msg) { return "network-id"; },
 *   });
 *
 * `connect` may return an object: it becomes `this` for the other calls.
 * Errors thrown are turned into channel errors (ChannelError as is, HttpError
 * by kind, anything else `fatal`). `subscribe` and `onFrame` default to
 * `unsupported`, `disconnect` to nothing.
 */
export function defineChannel(impl) {
  let self = impl;
  const unsupported = () => {
    throw ChannelError.unsupported();
  };
  const messages = (list) => (list ?? []).map(message);
  return {
    describe() {
      const info = impl.describe();
      return { name: String(info.name), version: String(info.version ?? "0.0.0"), ingress: info.ingress ?? ["poll"] };
    },
    connect: guarded(() => {
      const r = impl.connect ? impl.connect() : undefined;
      self = r && typeof r === "object" ? Object.assign(Object.create(impl), r) : impl;
    }, ChannelError.from),
    poll: guarded((cursor) => {
      const r = impl.poll.call(self, cursor ?? undefined) ?? {};
      return { messages: messages(r.messages), cursor: r.cursor ?? null, nextPollMs: r.nextPollMs ?? null };
    }, ChannelError.from),
    subscribe: guarded(() => {
      const s = (impl.subscribe ?? unsupported).call(self);
      return {
        kind: s.kind,
        url: String(s.url),
        headers: s.headers ? (Array.isArray(s.headers) ? s.headers : Object.entries(s.headers)) : [],
        initialFrames: (s.initialFrames ?? []).map(frame),
        heartbeatMs: s.heartbeatMs ?? null,
      };
    }, ChannelError.from),
    onFrame: guarded((f) => {
      const r = (impl.onFrame ?? unsupported).call(self, f) ?? {};
      return { messages: messages(r.messages), replies: (r.replies ?? []).map(frame) };
    }, ChannelError.from),
    send: guarded((msg) => {
      const m = { ...msg, thread: msg.thread ?? undefined, replyTo: msg.replyTo ?? undefined };
      const r = impl.send.call(self, m);
      if (r === undefined || r === null) return { id: "", frames: [] };
      if (typeof r === "string") return { id: r, frames: [] };
      return { id: String(r.id ?? ""), frames: (r.frames ?? []).map(frame) };
    }, ChannelError.from),
    disconnect() {
      try {
        if (impl.disconnect) impl.disconnect.call(self);
      } catch {
        // Nothing to report: the instance is going away.
      }
    },
  };
}

/**
 * Turn a list of tools into the `tools` export:
 *
 *   export const tools = defineTools([
 *     { name: "word_count", description: "Count words.", argsSchema: {...}, run(args) { return { words: 3 }; } },
 *   ]);
 *
 * `run` gets the parsed arguments and returns a string (passed as is) or a
 * value (sent as JSON). Bad JSON is `invalid-args`, an unknown name
 * `unknown-tool`, and anything `run` throws `failed` unless it is a ToolError.
 */
export function defineTools(list) {
  return {
    list() {
      return list.map((t) => ({
        name: t.name,
        description: t.description ?? "",
        argsSchema: typeof t.argsSchema === "string" ? t.argsSchema : JSON.stringify(t.argsSchema ?? { type: "object" }),
      }));
    },
    call: guarded((name, argsJson) => {
      const tool = list.find((t) => t.name === name);
      if (!tool) throw ToolError.unknownTool(name);
      let args;
      try {
        args = JSON.parse(argsJson);
      } catch (e) {
        throw ToolError.invalidArgs(`not JSON: ${errorText(e)}`);
      }
      const r = tool.run(args);
      return typeof r === "string" ? r : JSON.stringify(r);
    }, ToolError.from),
  };
}

/**
 * Turn a service into the `service` export:
 *
 *   export const service = defineService({ start() {}, tick() { return 60_000; }, stop() {} });
 *
 * `tick` returns how many milliseconds to wait before the next tick. An Error
 * thrown from `start` or `tick` becomes the error text kata shows.
 */
export function defineService(impl) {
  const text = (e) => errorText(e);
  return {
    start() {
      try {
        if (impl.start) impl.start();
      } catch (e) {
        throw text(e);
      }
    },
    tick() {
      try {
        return Number(impl.tick());
      } catch (e) {
        throw text(e);
      }
    },
    stop() {
      try {
        if (impl.stop) impl.stop();
      } catch {
        // Stopping anyway.
      }
    },
  };
}
