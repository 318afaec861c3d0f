// Amounts as the API sends them (integer minor units and a lower-case ISO
// 4217 code) shown as the customer expects to read them.
//
// The exponents must be the platform's own (crates/domain/src/currency.rs),
// not the browser's Intl data, which differs for some currencies (ISK, UGX):
// `amount=1000` means what the API means by it. A Rust test in services/web
// compares this table with the domain crate's.

/** Currencies whose minor unit is not the hundredth (exponent 0 or 3). */
export const EXPONENTS: Readonly<Record<string, number>> = {
  bhd: 3, bif: 0, clp: 0, djf: 0, gnf: 0, iqd: 3, isk: 0, jod: 3, jpy: 0,
  kmf: 0, krw: 0, kwd: 3, lyd: 3, omr: 3, pyg: 0, rwf: 0, tnd: 3, ugx: 0,
  vnd: 0, vuv: 0, xaf: 0, xof: 0, xpf: 0,
};

export function exponent(currency: string): number {
  return EXPONENTS[currency.toLowerCase()] ?? 2;
}

/** The amount as a decimal string in major units, exactly (no floats). */
export function majorUnits(minor: number, currency: string): string {
  const exp = exponent(currency);
  const negative = minor < 0;
  const digits = String(Math.abs(Math.trunc(minor))).padStart(exp + 1, "0");
  const whole = digits.slice(0, digits.length - exp);
  const fraction = exp > 0 ? `.${digits.slice(digits.length - exp)}` : "";
  return `${negative ? "-" : ""}${whole}${fraction}`;
}

export function formatAmount(minor: number, currency: string, locale?: string): string {
  const exp = exponent(currency);
  const format = new Intl.NumberFormat(locale, {
    style: "currency",
    currency: currency.toUpperCase(),
    minimumFractionDigits: exp,
    maximumFractionDigits: exp,
  });
  // Intl formats decimal strings exactly (ECMA-402 2023); the cast is for
  // type definitions that know only numbers.
  return format.format(majorUnits(minor, currency) as unknown as number);
}
