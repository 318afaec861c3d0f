// Builds the web front into dist/ (or --out DIR): TypeScript compiled by
// tsc, every asset renamed after its content's hash, pages pointed at the
// hashed names, and gzip and brotli copies of everything for services/web
// (or a CDN) to serve precompressed.
//
//   node web/build.mjs [--out DIR]
//
// Output layout, what services/web serves and a bucket would hold:
//   assets/<name>.<hash>.<ext>   immutable: cached for a year
//   checkout/index.html          the hosted checkout (cached only with revalidation)
//   demo/index.html              the demo shop (local runs)
//
// The build refuses pages with inline scripts, inline styles or references
// to other hosts: the Content-Security-Policy forbids them, and a page that
// breaks under it should fail here rather than in a browser.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, extname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants as zlib, gzipSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
const outArg = process.argv.indexOf("--out");
const out = resolve(outArg >= 0 ? process.argv[outArg + 1] ?? "" : join(here, "dist"));
// A build into a folder of its own (--out, as tests do) compiles into a
// folder of its own too, so builds side by side never share files.
const compiled = outArg >= 0 ? `${out}.tsc-${process.pid}` : join(here, "build", "js");
const HASH_CHARS = 10;
const COMPRESSIBLE = new Set([".html", ".js", ".css", ".svg", ".json"]);

function fail(message) {
  console.error(`web build: ${message}`);
  process.exit(1);
}

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

function hashed(name, content) {
  const hash = createHash("sha256").update(content).digest("hex").slice(0, HASH_CHARS);
  const ext = extname(name);
  return `${basename(name, ext)}.${hash}${ext}`;
}

// 1. TypeScript, type-checked.
rmSync(compiled, { recursive: true, force: true });
const tsc = join(here, "node_modules", "typescript", "bin", "tsc");
const compile = spawnSync(process.execPath, [tsc, "-p", join(here, "tsconfig.json"), "--outDir", compiled], {
  stdio: "inherit",
});
if (compile.status !== 0) fail("tsc failed (run `npm ci` in web/ first if typescript is missing)");

// 2. Hashed assets. A module's hash covers the hashed names of what it
// imports, so a change anywhere renames every module that depends on it.
const staging = `${out}.tmp-${process.pid}`;
rmSync(staging, { recursive: true, force: true });
mkdirSync(join(staging, "assets"), { recursive: true });
/** Source asset name (`checkout.js`) → hashed name. */
const names = new Map();
/** Module name → the module names it imports (transitively), for preloads. */
const imports = new Map();
const IMPORT = /(\bfrom\s*|\bimport\s*\(?\s*)(["'])\.\/([\w-]+\.js)\2/g;

function emitModule(name, visiting = new Set()) {
  if (names.has(name)) return names.get(name);
  if (visiting.has(name)) fail(`import cycle through ${name}`);
  visiting.add(name);
  const path = join(compiled, name);
  let source;
  try {
    source = readFileSync(path, "utf8");
  } catch {
    fail(`a module imports ${name}, which tsc did not produce`);
  }
  const deps = new Set();
  const rewritten = source.replace(IMPORT, (_, lead, quote, dep) => {
    deps.add(dep);
    return `${lead}${quote}./${emitModule(dep, visiting)}${quote}`;
  });
  imports.set(name, new Set([...deps].flatMap((dep) => [dep, ...imports.get(dep)])));
  const target = hashed(name, rewritten);
  writeFileSync(join(staging, "assets", target), rewritten);
  names.set(name, target);
  return target;
}

for (const path of files(compiled).filter((p) => p.endsWith(".js"))) emitModule(relative(compiled, path));
for (const path of files(join(here, "static"))) {
  const content = readFileSync(path);
  const target = hashed(basename(path), content);
  writeFileSync(join(staging, "assets", target), content);
  names.set(basename(path), target);
}

// 3. Pages, pointed at the hashed assets.
const pagesDir = join(here, "pages");
for (const path of files(pagesDir).filter((p) => p.endsWith(".html"))) {
  const page = relative(pagesDir, path);
  let html = readFileSync(path, "utf8");
  if (/<script(?![^>]*\bsrc=)[^>]*>/i.test(html)) fail(`${page}: inline <script> (the CSP allows only files)`);
  if (/<style[\s>]|\sstyle=|\son[a-z]+=/i.test(html)) fail(`${page}: inline style or event handler attribute`);
  if (/\s(?:src|href|action)=["']?(?:[a-z][a-z0-9+.-]*:)?\/\//i.test(html)) fail(`${page}: a reference to another host`);
  html = html.replace(/(["'])\/assets\/([\w.-]+)\1/g, (_, quote, name) => {
    const target = names.get(name);
    if (!target) fail(`${page}: unknown asset /assets/${name}`);
    return `${quote}/assets/${target}${quote}`;
  });
  // Preload every module an entry imports, so they load in parallel.
  html = html.replace(/<script type="module" src="\/assets\/([\w.-]+)"><\/script>/g, (tag, target) => {
    const entry = [...names].find(([, hashedName]) => hashedName === target)?.[0];
    const preloads = [...(imports.get(entry) ?? [])]
      .map((dep) => `<link rel="modulepreload" href="/assets/${names.get(dep)}">\n`)
      .join("");
    return `${preloads}${tag}`;
  });
  mkdirSync(dirname(join(staging, page)), { recursive: true });
  writeFileSync(join(staging, page), html);
}

// 4. Precompressed copies.
for (const path of files(staging)) {
  if (!COMPRESSIBLE.has(extname(path))) continue;
  const content = readFileSync(path);
  writeFileSync(`${path}.gz`, gzipSync(content, { level: 9 }));
  writeFileSync(
    `${path}.br`,
    brotliCompressSync(content, {
      params: { [zlib.BROTLI_PARAM_QUALITY]: 11, [zlib.BROTLI_PARAM_SIZE_HINT]: content.length },
    }),
  );
}

// 5. Swap in the new output whole, so a server never serves half a build.
rmSync(out, { recursive: true, force: true });
renameSync(staging, out);
if (outArg >= 0) rmSync(compiled, { recursive: true, force: true });
console.log(`web build: ${names.size} assets, pages in ${relative(process.cwd(), out) || "."}`);
