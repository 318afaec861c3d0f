import assert from "node:assert/strict";
import { test } from "node:test";
import { formatAmount, majorUnits } from "../../build/js/money.js";

test("minor units become major units exactly, by the currency's exponent", () => {
  assert.equal(majorUnits(2400, "eur"), "24.00");
  assert.equal(majorUnits(5, "usd"), "0.05");
  assert.equal(majorUnits(2500, "jpy"), "2500");
  assert.equal(majorUnits(1500, "kwd"), "1.500");
  assert.equal(majorUnits(-150, "usd"), "-1.50");
  assert.equal(majorUnits(99999999999, "usd"), "999999999.99");
});

test("amounts read as customers expect in their locale", () => {
  assert.equal(formatAmount(2400, "eur", "en-US"), "€24.00");
  assert.equal(formatAmount(2400, "eur", "de-DE"), "24,00\u00a0€");
  assert.equal(formatAmount(2500, "jpy", "en-US"), "¥2,500");
  assert.equal(formatAmount(1500, "kwd", "en-US"), "KWD\u00a01.500");
  assert.equal(formatAmount(123456, "usd", "en-US"), "$1,234.56");
  // ISK has no minor unit on the platform, whatever the browser's data says.
  assert.equal(formatAmount(500, "isk", "en-US"), "ISK\u00a0500");
});
