// What the browser scenarios share: Debian's Chromium (never a downloaded
// browser) through playwright-core, a fresh context per scenario, and
// checks that run after each one (no page errors, no CSP violations).
//
// Run by services/web's test `the_checkout_works_in_a_real_browser`, which
// starts the platform and sets:
//   SNAKEPAY_WEB_URL        the web service (demo shop and checkout)
//   SNAKEPAY_API_URL        the External API the pages call
//   SNAKEPAY_CHROMIUM       the browser binary (default /usr/bin/chromium)
//   SNAKEPAY_ARTIFACTS_DIR  where screenshots go (default web/test-results)

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before } from "node:test";
import { chromium } from "playwright-core";

export const WEB = process.env.SNAKEPAY_WEB_URL ?? "";
const API = process.env.SNAKEPAY_API_URL ?? "";
const ARTIFACTS = process.env.SNAKEPAY_ARTIFACTS_DIR ?? "test-results";
/** Long enough for a payment through the whole pipeline on a slow machine. */
export const OUTCOME_TIMEOUT_MS = 30_000;

export const CARDS = {
  visa: "4242 4242 4242 4242",
  declined: "4000 0000 0000 0002",
  threeDSecure: "4000 0027 6000 3184",
  slow: "4000 0000 0000 7775",
};

let browser;

before(async () => {
  assert.ok(WEB && API, "SNAKEPAY_WEB_URL or SNAKEPAY_API_URL is not set: run these through services/web's tests");
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.SNAKEPAY_CHROMIUM ?? "/usr/bin/chromium",
    // Headless, and quiet: no calls home from a machine whose network is
    // closed, and no sandbox (tests run as root in CI).
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
});

/**
 * A fresh page for one scenario. `finish()` takes a last screenshot and
 * fails the scenario if the page threw or the browser reported a
 * Content-Security-Policy violation.
 */
export async function newPage(name) {
  const context = await browser.newContext({
    locale: "en-US",
    viewport: { width: 900, height: 860 },
    deviceScaleFactor: 1,
  });
  const page = await context.newPage();
  page.setDefaultTimeout(OUTCOME_TIMEOUT_MS);
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  // The pages load nothing from other hosts and call only the API; the one
  // other place a customer goes is the bank's 3-D Secure page (a navigation).
  page.on("request", (request) => {
    const origin = new URL(request.url()).origin;
    if (origin !== new URL(WEB).origin && origin !== new URL(API).origin && request.resourceType() !== "document") {
      problems.push(`request to another host: ${request.url()}`);
    }
  });
  page.on("console", (message) => {
    if (message.type() === "error" && /Content Security Policy|Refused to/i.test(message.text())) {
      problems.push(`console: ${message.text()}`);
    }
  });
  let shot = 0;
  const screenshot = async (step) => {
    shot += 1;
    await page.screenshot({ path: join(ARTIFACTS, `${name}-${String(shot).padStart(2, "0")}-${step}.png`), fullPage: true });
  };
  return {
    page,
    screenshot,
    async finish() {
      await screenshot("end");
      await context.close();
      assert.deepEqual(problems, []);
    },
  };
}

/** From the demo shop to the checkout for the Python plush (€24.00). */
export async function openCheckout(page) {
  await page.goto(`${WEB}/demo/`);
  await page.getByRole("button", { name: "Buy Python plush for €24.00" }).click();
  await page.waitForURL(/\/checkout\/#/);
  await page.getByLabel("Card number").waitFor();
}

export async function fillCard(page, number, expiry = "12 / 34", cvc = "123") {
  await page.getByLabel("Card number").fill(number);
  await page.getByLabel("Expiry date").fill(expiry);
  await page.getByLabel("Security code").fill(cvc);
}

export async function pay(page) {
  await page.getByRole("button", { name: /^Pay / }).click();
}

export async function waitForSuccess(page) {
  await page.getByRole("heading", { name: "Payment successful" }).waitFor();
}

/** The ID of the element that has the focus. */
export function focusedId(page) {
  return page.evaluate(() => document.activeElement?.id ?? "");
}
