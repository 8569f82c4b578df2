// Copies the built package (dist/*.js, after `npm run build`) into the browser demo's embedded
// assets, crates/keymaster-server/demo/sdk/, which the server serves under /demo/sdk/. Only the
// modules that dist/index.js reaches are copied, without their source map comments and with a
// header naming their source. With --check, writes nothing and fails when the checked-in copy
// differs from what it would write (the server's build has no tsc, so the copy is checked in).

import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkgDir = join(here, "..");
const dist = join(pkgDir, "dist");
const target = join(pkgDir, "..", "..", "crates", "keymaster-server", "demo", "sdk");
const check = process.argv.includes("--check");
const { version } = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));

if (!existsSync(join(dist, "index.js"))) {
  console.error("demo-assets: no dist/index.js; run `npm run build` first");
  process.exit(1);
}

// The module graph from index.js through relative imports and re-exports.
const wanted = new Map();
const queue = ["index.js"];
while (queue.length > 0) {
  const name = queue.shift();
  if (wanted.has(name)) continue;
  const source = readFileSync(join(dist, name), "utf8");
  const body = source.replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, "\n");
  const stem = name.replace(/\.js$/, "");
  wanted.set(
    name,
    `// Generated from sdk/typescript/src/${stem}.ts (keymaster-client ${version}) by ` +
      "sdk/typescript/scripts/demo-assets.mjs; do not edit.\n" +
      body,
  );
  for (const m of source.matchAll(/(?:from|import)\s*["'](\.\/[^"']+)["']/g)) {
    const dep = m[1].slice(2);
    if (dep.includes("/") || !dep.endsWith(".js")) {
      console.error(`demo-assets: ${name} imports ${m[1]}, which the demo's flat /demo/sdk/ cannot serve`);
      process.exit(1);
    }
    queue.push(dep);
  }
}

const present = existsSync(target) ? readdirSync(target) : [];
const problems = [];
for (const [name, text] of wanted) {
  const path = join(target, name);
  const old = existsSync(path) ? readFileSync(path, "utf8") : null;
  if (old === text) continue;
  problems.push(old === null ? `missing ${name}` : `differs ${name}`);
  if (!check) {
    mkdirSync(target, { recursive: true });
    writeFileSync(path, text);
  }
}
for (const name of present) {
  if (wanted.has(name)) continue;
  problems.push(`not part of the package ${name}`);
  if (!check) rmSync(join(target, name));
}

if (check && problems.length > 0) {
  console.error(
    "demo-assets: crates/keymaster-server/demo/sdk/ is out of date with sdk/typescript " +
      `(${problems.join(", ")}): run 'npm run build && npm run demo-assets' in sdk/typescript and commit it`,
  );
  process.exit(1);
}
if (!check) console.log(`demo-assets: ${[...wanted.keys()].sort().join(" ")} (${problems.length} changed)`);
