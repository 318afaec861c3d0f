// The card checks, run in Node on tsc's output (`npm test` builds first).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  caretAfterDigits, checkCvc, checkExpiry, checkNumber, detectBrand, formatExpiry, formatNumber, luhnValid, parseExpiry,
} from "../../build/js/card.js";

test("the simulator's test cards pass Luhn and a changed digit fails it", () => {
  for (const number of ["4242424242424242", "4000000000000002", "4000002760003184", "5555555555554444", "378282246310005"]) {
    assert.ok(luhnValid(number), number);
    assert.equal(checkNumber(number), null, number);
  }
  assert.equal(luhnValid("4242424242424241"), false);
  assert.match(checkNumber("4242 4242 4242 4241"), /incorrect/);
  assert.match(checkNumber("4242 4242"), /incomplete/);
  assert.match(checkNumber(""), /Enter/);
});

test("brands are told from the first digits", () => {
  assert.equal(detectBrand("4242"), "visa");
  assert.equal(detectBrand("5555"), "mastercard");
  assert.equal(detectBrand("2223"), "mastercard");
  assert.equal(detectBrand("3782"), "amex");
  assert.equal(detectBrand("6011"), "discover");
  assert.equal(detectBrand("3530"), "jcb");
  assert.equal(detectBrand("3056"), "diners");
  assert.equal(detectBrand("6200"), "unionpay");
  assert.equal(detectBrand("9999"), "unknown");
  assert.equal(detectBrand(""), "unknown");
});

test("numbers are grouped as printed on the card", () => {
  assert.equal(formatNumber("4242424242424242"), "4242 4242 4242 4242");
  assert.equal(formatNumber("378282246310005"), "3782 822463 10005");
  assert.equal(formatNumber("42424"), "4242 4");
  assert.equal(formatNumber("4242"), "4242");
});

test("the expiry date is typed as MM / YY and judged by the month's end", () => {
  assert.equal(formatExpiry("1"), "1");
  assert.equal(formatExpiry("12"), "12");
  assert.equal(formatExpiry("1234"), "12 / 34");
  assert.equal(formatExpiry("5"), "05");
  assert.deepEqual(parseExpiry("12 / 34"), { month: 12, year: 2034 });
  assert.deepEqual(parseExpiry("1/2030"), { month: 1, year: 2030 });
  assert.equal(parseExpiry("13 / 30"), null);
  const now = new Date(2030, 5, 30);
  assert.equal(checkExpiry("06 / 30", now), null, "valid to the end of its month");
  assert.match(checkExpiry("05 / 30", now), /expired/);
  assert.match(checkExpiry("13 / 31", now), /MM \/ YY/);
  assert.match(checkExpiry("01 / 2099", now), /year/);
  assert.match(checkExpiry("", now), /Enter/);
});

test("the security code has 4 digits for American Express and 3 otherwise", () => {
  assert.equal(checkCvc("123", "visa"), null);
  assert.equal(checkCvc("1234", "amex"), null);
  assert.match(checkCvc("12", "visa"), /3 digits/);
  assert.match(checkCvc("123", "amex"), /4 digits/);
  assert.match(checkCvc("12a", "visa"), /3 digits/);
});

test("the caret stays after the digit it followed when spaces are inserted", () => {
  assert.equal(caretAfterDigits("4242 4242", 5), 6);
  assert.equal(caretAfterDigits("4242 4242", 4), 4);
  assert.equal(caretAfterDigits("4242", 0), 0);
  assert.equal(caretAfterDigits("12 / 3", 3), 6);
});
