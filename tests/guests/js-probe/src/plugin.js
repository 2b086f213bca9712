// Test guest `js-probe`: the JavaScript row of tests/languages.rs. Every
// language kata has a template for ships the same probe
// (tests/guests/<lang>-probe/), so one table-driven test shows the same
// sandbox guarantees in every language.
//
// Each `poll` reads config `probe` and returns one message (id
// `probe-<now_ms>`, conversation and sender `probe`) whose text is:
//
// - `http`: GET config `url` → `http: ok <status> <body>` or `http: err <error>`
// - `file`: read config `path` → `file: ok <n> bytes` or `file: err <error>`
// - `secret`: GET `url` with `token={{secret:token}}` in the query and the
//   header `Authorization: Bearer {{secret:token}}` → `secret: ok <status>
//   <body>` or `secret: err <error>`, also written to the log
// - `spin`: burns CPU forever; `bomb`: allocates 1 MiB blocks forever
// - anything else: `unknown probe <value>`
//
// vendor/kata-sdk is a copy of sdk/js/src kept current by sdk/js/generate.sh.

import { defineChannel, config, http, log, message, nowMs, readFile } from "../vendor/kata-sdk/index.js";

/** The placeholder the host replaces with the secret `token`. */
const PLACEHOLDER = "{{secret:token}}";

function withToken(url) {
  return `${url}${url.includes("?") ? "&" : "?"}token=${PLACEHOLDER}`;
}

function get(what, url, auth) {
  try {
    const r = http.get(url, { headers: auth ? { authorization: `Bearer ${PLACEHOLDER}` } : {} });
    return `${what}: ok ${r.status} ${r.text()}`;
  } catch (e) {
    return `${what}: err ${e}`;
  }
}

function run(probe) {
  switch (probe) {
    case "http":
      return get("http", config.get("url") ?? "", false);
    case "file":
      try {
        return `file: ok ${readFile(config.get("path") ?? "").length} bytes`;
      } catch (e) {
        return `file: err ${e.message}`;
      }
    case "secret": {
      const text = get("secret", withToken(config.get("url") ?? ""), true);
      log.info(text);
      return text;
    }
    case "spin": {
      let x = 0;
      for (;;) x = (Math.imul(x, 1103515245) + 12345) | 0;
    }
    case "bomb": {
      const blocks = [];
      for (;;) {
        const block = new Uint8Array(1 << 20);
        block[(blocks.length * 7) % (1 << 20)] = 1;
        blocks.push(block);
      }
    }
    default:
      return `unknown probe ${probe}`;
  }
}

export const channel = defineChannel({
  describe: () => ({ name: "js-probe", version: "0.1.0", ingress: ["poll"] }),
  poll() {
    const now = nowMs();
    const text = run(config.get("probe") ?? "");
    return { messages: [message({ id: `probe-${now}`, conversation: "probe", sender: "probe", text })] };
  },
  send: (m) => ({ id: `sent-${m.idempotencyKey}` }),
});
