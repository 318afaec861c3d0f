// What the build promises services/web and the Content-Security-Policy.
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "dist");
const pages = ["checkout/index.html", "demo/index.html"];

test("pages load only hashed assets of their own, and no inline code", () => {
  for (const page of pages) {
    const html = readFileSync(join(dist, page), "utf8");
    const refs = [...html.matchAll(/(?:src|href)="([^"#]+)"/g)].map((m) => m[1]);
    assert.ok(refs.length >= 3, page);
    for (const ref of refs) {
      assert.match(ref, /^\/assets\/[\w-]+\.[0-9a-f]{10}\.(js|css|svg)$/, `${page}: ${ref}`);
      assert.ok(existsSync(join(dist, ref)), `${page}: ${ref} exists`);
    }
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)/, page);
    assert.doesNotMatch(html, /\sstyle=|<style/, page);
  }
});

test("modules import each other by hashed name", () => {
  const assets = readdirSync(join(dist, "assets"));
  const checkout = assets.find((name) => /^checkout\.[0-9a-f]{10}\.js$/.test(name));
  const source = readFileSync(join(dist, "assets", checkout), "utf8");
  const imports = [...source.matchAll(/from "\.\/([^"]+)"/g)].map((m) => m[1]);
  assert.ok(imports.length >= 3);
  for (const name of imports) assert.ok(assets.includes(name), name);
});

test("every text asset has gzip and brotli copies", () => {
  for (const name of readdirSync(join(dist, "assets")).filter((n) => /\.(js|css|svg)$/.test(n))) {
    assert.ok(existsSync(join(dist, "assets", `${name}.gz`)), name);
    assert.ok(existsSync(join(dist, "assets", `${name}.br`)), name);
  }
});
