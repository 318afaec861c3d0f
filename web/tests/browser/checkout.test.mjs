// The hosted checkout, as a customer uses it, in Chromium. See browser.mjs
// for how these run.

import assert from "node:assert/strict";
import { test } from "node:test";
import { CARDS, WEB, fillCard, focusedId, newPage, openCheckout, pay, waitForSuccess } from "./browser.mjs";

test("a good card pays and ends on the success page", async () => {
  const { page, screenshot, finish } = await newPage("success");
  await openCheckout(page);
  assert.equal(await page.locator("#merchant").textContent(), "Demo Shop");
  assert.equal(await page.locator("#amount").textContent(), "€24.00");
  assert.ok(await page.getByText("Test mode").isVisible());
  await fillCard(page, CARDS.visa);
  assert.equal(await page.locator("#card-brand").textContent(), "Visa");
  await screenshot("filled");
  await pay(page);
  await waitForSuccess(page);
  assert.match(await page.locator("#result-text").textContent(), /€24\.00 paid to Demo Shop/);
  assert.equal(await focusedId(page), "result-title", "the outcome gets the focus, so screen readers read it");
  await screenshot("paid");
  // Back to the shop.
  await page.getByRole("link", { name: "Return to Demo Shop" }).click();
  await page.waitForURL(`${WEB}/demo/`);
  await finish();
});

test("a declined card says why, and another card then pays", async () => {
  const { page, screenshot, finish } = await newPage("decline");
  await openCheckout(page);
  await fillCard(page, CARDS.declined);
  await pay(page);
  const alert = page.getByRole("alert");
  await alert.getByText("Your card was declined. Try another card.").waitFor();
  assert.equal(await focusedId(page), "card-number", "the card number is ready to be replaced");
  await screenshot("declined");
  await fillCard(page, CARDS.visa);
  await pay(page);
  await waitForSuccess(page);
  await finish();
});

test("3-D Secure: the bank's challenge, then back to success", async () => {
  const { page, screenshot, finish } = await newPage("3ds");
  await openCheckout(page);
  await fillCard(page, CARDS.threeDSecure);
  await pay(page);
  await page.getByRole("heading", { name: "Confirm your payment" }).waitFor();
  assert.ok(!page.url().startsWith(WEB), "the challenge is the bank's (the simulator's) page");
  assert.ok(!page.url().includes("secret"), "the client secret never travels to the bank");
  await screenshot("challenge");
  // Back to the checkout without answering: it offers the bank again
  // rather than sending the customer there unasked.
  await page.goBack();
  await page.getByRole("button", { name: "Continue to your bank" }).click();
  await page.getByRole("button", { name: "Complete authentication" }).click();
  await page.waitForURL((url) => url.href.startsWith(`${WEB}/checkout/`));
  await waitForSuccess(page);
  await finish();
});

test("3-D Secure failed: the decline is explained and another card pays", async () => {
  const { page, finish } = await newPage("3ds-failed");
  await openCheckout(page);
  await fillCard(page, CARDS.threeDSecure);
  await pay(page);
  await page.getByRole("button", { name: "Fail authentication" }).click();
  await page.waitForURL((url) => url.href.startsWith(`${WEB}/checkout/`));
  await page.getByRole("alert").getByText(/Try again or use another card/).waitFor();
  await fillCard(page, CARDS.visa);
  await pay(page);
  await waitForSuccess(page);
  await finish();
});

test("the whole purchase with the keyboard only", async () => {
  const { page, screenshot, finish } = await newPage("keyboard");
  await page.goto(`${WEB}/demo/`);
  await page.getByRole("button", { name: /Buy Python plush/ }).waitFor();
  // Tab to the product's button, as a keyboard user would.
  let tabs = 0;
  while ((await page.evaluate(() => document.activeElement?.getAttribute("aria-label") ?? "")) !== "Buy Python plush for €24.00") {
    tabs += 1;
    assert.ok(tabs < 20, "the Buy button is reachable with Tab");
    await page.keyboard.press("Tab");
  }
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/checkout\/#/);
  await page.getByLabel("Card number").waitFor();
  assert.equal(await focusedId(page), "card-number", "the form starts with the focus in the card number");
  await page.keyboard.type(CARDS.visa.replaceAll(" ", ""));
  assert.equal(await page.getByLabel("Card number").inputValue(), CARDS.visa, "grouped as typed");
  await page.keyboard.press("Tab");
  assert.equal(await focusedId(page), "card-expiry");
  await page.keyboard.type("1234");
  assert.equal(await page.getByLabel("Expiry date").inputValue(), "12 / 34");
  await page.keyboard.press("Tab");
  assert.equal(await focusedId(page), "card-cvc");
  await page.keyboard.type("123");
  await screenshot("typed");
  await page.keyboard.press("Tab");
  assert.equal(await focusedId(page), "pay-button");
  await page.keyboard.press("Enter");
  await waitForSuccess(page);
  assert.equal(await focusedId(page), "result-title");
  await page.keyboard.press("Tab");
  assert.equal(await focusedId(page), "result-action");
  await page.keyboard.press("Enter");
  await page.waitForURL(`${WEB}/demo/`);
  await finish();
});

test("client-side checks catch mistakes before anything is sent", async () => {
  const { page, screenshot, finish } = await newPage("checks");
  const confirmations = [];
  page.on("request", (request) => {
    if (request.url().endsWith("/confirm")) confirmations.push(request.url());
  });
  await openCheckout(page);
  await pay(page);
  assert.equal(await focusedId(page), "card-number", "an empty form points at its first field");
  assert.equal(await page.getByLabel("Card number").getAttribute("aria-invalid"), "true");
  assert.equal(await page.locator("#card-number-error").textContent(), "Enter your card number.");

  await fillCard(page, "4242 4242 4242 4241", "01 / 20", "12");
  await pay(page);
  assert.equal(await page.locator("#card-number-error").textContent(), "Your card number is incomplete or incorrect.");
  assert.equal(await page.locator("#card-expiry-error").textContent(), "Your card has expired.");
  assert.equal(await page.locator("#card-cvc-error").textContent(), "The security code has 3 digits.");
  // Each message is tied to its field for screen readers.
  const described = await page.getByLabel("Card number").getAttribute("aria-describedby");
  assert.match(described, /card-number-error/);
  await screenshot("errors");

  // American Express: brand, grouping and a 4-digit code.
  await page.getByLabel("Card number").fill("378282246310005");
  assert.equal(await page.getByLabel("Card number").inputValue(), "3782 822463 10005");
  assert.equal(await page.locator("#card-brand").textContent(), "American Express");
  await page.getByLabel("Security code").fill("1234");
  assert.equal(await page.getByLabel("Security code").inputValue(), "1234");
  assert.equal(await page.getByLabel("Card number").getAttribute("aria-invalid"), null, "corrected as typed");
  assert.deepEqual(confirmations, [], "nothing was sent while the form was wrong");
  await finish();
});

test("a payment still processing is polled until it is final", async () => {
  const { page, finish } = await newPage("processing");
  await openCheckout(page);
  await fillCard(page, CARDS.slow);
  await pay(page);
  await page.getByText("Processing your payment…").waitFor();
  await waitForSuccess(page);
  await finish();
});

test("a network error is retried with the same idempotency key", async () => {
  const { page, screenshot, finish } = await newPage("network");
  await openCheckout(page);
  const keys = [];
  let failing = true;
  await page.route("**/confirm", async (route) => {
    if (route.request().method() !== "POST") return route.continue();
    keys.push(route.request().headers()["idempotency-key"]);
    if (failing) await route.abort("internetdisconnected");
    else await route.continue();
  });
  await fillCard(page, CARDS.visa);
  await pay(page);
  await page.getByRole("alert").getByText(/couldn't reach the payment service/).waitFor();
  assert.equal(keys.length, 3, "the first try and two automatic ones");
  await screenshot("offline");
  failing = false;
  await page.getByRole("button", { name: "Try again" }).click();
  await waitForSuccess(page);
  assert.equal(new Set(keys).size, 1, `one confirmation, one key: ${keys}`);
  await finish();
});

test("a broken link explains itself", async () => {
  const { page, finish } = await newPage("bad-link");
  await page.goto(`${WEB}/checkout/#client_secret=pi_0nope_secret_nope&key=pk_test_nope`);
  await page.getByRole("heading", { name: "Link not valid" }).waitFor();
  await page.goto(`${WEB}/checkout/`);
  await page.reload();
  await page.getByText("This payment link is incomplete.").waitFor();
  await finish();
});
