// jco 1.35 runs wasm-tools under preview2-shim, which starts with no
// preopened directories, so `jco types DIR` cannot read the WIT ("failed to
// get path metadata"). Preopen / in every copy of preview2-shim jco loads.
import { readdirSync, existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "node_modules");
const found = [];
(function walk(dir, depth) {
  if (depth > 6 || !existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const path = join(dir, entry.name);
    if (path.endsWith(join("@bytecodealliance", "preview2-shim"))) {
      const fs = join(path, "dist", "nodejs", "filesystem.js");
      if (existsSync(fs)) found.push(fs);
    }
    walk(path, depth + 1);
  }
})(root, 0);
for (const file of found) {
  const shim = await import(pathToFileURL(file).href);
  shim._setPreopens({ "/": "/" });
}
