// Client-side card checks: what can be told about a card before asking the
// External API. They spare the customer a round trip for a typo; the API and
// the processor still decide (a number that passes here can be declined).
//
// Pure functions of strings and dates, no DOM, so the unit tests run them in
// Node (tests/unit/card.test.mjs).

export type Brand =
  | "visa"
  | "mastercard"
  | "amex"
  | "discover"
  | "diners"
  | "jcb"
  | "unionpay"
  | "unknown";

interface BrandRule {
  brand: Exclude<Brand, "unknown">;
  label: string;
  /** Inclusive ranges of the number's first digits (equal lengths). */
  prefixes: Array<[string, string]>;
  lengths: number[];
  cvcLength: number;
  /** Digits per group when displayed. */
  groups: number[];
}

const FOUR_BY_FOUR = [4, 4, 4, 4, 3];

// Ordered so that a longer, more specific prefix is tried before a shorter
// one that overlaps it (UnionPay's 62 inside Discover's 622126–622925).
const RULES: BrandRule[] = [
  { brand: "amex", label: "American Express", prefixes: [["34", "34"], ["37", "37"]], lengths: [15], cvcLength: 4, groups: [4, 6, 5] },
  { brand: "diners", label: "Diners Club", prefixes: [["300", "305"], ["36", "36"], ["38", "39"]], lengths: [14, 15, 16, 17, 18, 19], cvcLength: 3, groups: [4, 6, 9] },
  { brand: "discover", label: "Discover", prefixes: [["6011", "6011"], ["644", "649"], ["65", "65"], ["622126", "622925"]], lengths: [16, 17, 18, 19], cvcLength: 3, groups: FOUR_BY_FOUR },
  { brand: "jcb", label: "JCB", prefixes: [["3528", "3589"]], lengths: [16, 17, 18, 19], cvcLength: 3, groups: FOUR_BY_FOUR },
  { brand: "unionpay", label: "UnionPay", prefixes: [["62", "62"], ["81", "81"]], lengths: [16, 17, 18, 19], cvcLength: 3, groups: FOUR_BY_FOUR },
  { brand: "mastercard", label: "Mastercard", prefixes: [["51", "55"], ["2221", "2720"]], lengths: [16], cvcLength: 3, groups: FOUR_BY_FOUR },
  { brand: "visa", label: "Visa", prefixes: [["4", "4"]], lengths: [13, 16, 19], cvcLength: 3, groups: FOUR_BY_FOUR },
];

const UNKNOWN_LENGTHS = [12, 13, 14, 15, 16, 17, 18, 19];
export const MAX_CARD_DIGITS = 19;

export function digitsOnly(text: string): string {
  return text.replace(/\D/g, "");
}

function ruleFor(digits: string): BrandRule | undefined {
  return RULES.find((rule) =>
    rule.prefixes.some(([low, high]) => {
      const head = digits.slice(0, low.length);
      return head.length === low.length && head >= low && head <= high;
    }),
  );
}

export function detectBrand(digits: string): Brand {
  return ruleFor(digits)?.brand ?? "unknown";
}

export function brandLabel(brand: Brand): string {
  return RULES.find((rule) => rule.brand === brand)?.label ?? "";
}

export function cvcLength(brand: Brand): number {
  return RULES.find((rule) => rule.brand === brand)?.cvcLength ?? 3;
}

export function maxLength(brand: Brand): number {
  const lengths = RULES.find((rule) => rule.brand === brand)?.lengths ?? UNKNOWN_LENGTHS;
  return Math.max(...lengths);
}

/** The Luhn (mod 10) check every card number carries. */
export function luhnValid(digits: string): boolean {
  if (!/^\d+$/.test(digits)) return false;
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i -= 1) {
    let d = digits.charCodeAt(i) - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

/** The number as shown while typing: grouped by the brand's pattern. */
export function formatNumber(digits: string): string {
  const groups = ruleFor(digits)?.groups ?? FOUR_BY_FOUR;
  const parts: string[] = [];
  let at = 0;
  for (const size of groups) {
    if (at >= digits.length) break;
    parts.push(digits.slice(at, at + size));
    at += size;
  }
  if (at < digits.length) parts.push(digits.slice(at));
  return parts.join(" ");
}

/** `MM / YY` while typing; the separator appears only once a year digit does. */
export function formatExpiry(text: string): string {
  let digits = digitsOnly(text).slice(0, 4);
  // A leading 2–9 can only be a one-digit month.
  if (/^[2-9]/.test(digits)) digits = `0${digits}`.slice(0, 4);
  return digits.length > 2 ? `${digits.slice(0, 2)} / ${digits.slice(2)}` : digits;
}

/** Why a field is invalid, in words for the customer; null when it is fine. */
export type Problem = string | null;

export function checkNumber(text: string): Problem {
  const digits = digitsOnly(text);
  if (digits.length === 0) return "Enter your card number.";
  const rule = ruleFor(digits);
  const lengths = rule?.lengths ?? UNKNOWN_LENGTHS;
  if (!lengths.includes(digits.length) || !luhnValid(digits)) {
    return "Your card number is incomplete or incorrect.";
  }
  return null;
}

export interface Expiry {
  month: number;
  /** Four digits. */
  year: number;
}

/** How far ahead an expiry date may be; further is surely a typo. */
const MAX_YEARS_AHEAD = 20;

export function parseExpiry(text: string): Expiry | null {
  const match = /^\s*(\d{1,2})\s*\/?\s*(\d{2}|\d{4})\s*$/.exec(text);
  if (!match || match[1] === undefined || match[2] === undefined) return null;
  const month = Number(match[1]);
  const year = match[2].length === 2 ? 2000 + Number(match[2]) : Number(match[2]);
  if (month < 1 || month > 12) return null;
  return { month, year };
}

export function checkExpiry(text: string, now: Date): Problem {
  if (digitsOnly(text).length === 0) return "Enter the expiry date.";
  const expiry = parseExpiry(text);
  if (!expiry) return "Enter the expiry date as MM / YY.";
  // A card is valid until the end of its expiry month.
  const current = now.getFullYear() * 12 + now.getMonth();
  const expires = expiry.year * 12 + (expiry.month - 1);
  if (expires < current) return "Your card has expired.";
  if (expiry.year > now.getFullYear() + MAX_YEARS_AHEAD) return "The expiry year looks wrong.";
  return null;
}

export function checkCvc(text: string, brand: Brand): Problem {
  const digits = digitsOnly(text);
  const wanted = cvcLength(brand);
  if (digits.length === 0) return "Enter the security code.";
  if (digits.length !== wanted || digits.length !== text.trim().length) {
    return `The security code has ${wanted} digits.`;
  }
  return null;
}

/**
 * Where the caret belongs after reformatting: just after the same number of
 * digits as before, so typing or deleting in the middle of a number never
 * throws the caret to the end.
 */
export function caretAfterDigits(formatted: string, digitsBefore: number): number {
  if (digitsBefore <= 0) return 0;
  let seen = 0;
  for (let i = 0; i < formatted.length; i += 1) {
    if (/\d/.test(formatted.charAt(i))) {
      seen += 1;
      if (seen === digitsBefore) return i + 1;
    }
  }
  return formatted.length;
}
