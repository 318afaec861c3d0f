// The hosted checkout: one page that takes a customer from an open
// PaymentIntent to its outcome.
//
// It is opened as `/checkout/#client_secret=…&key=pk_…&merchant=…&return_url=…`.
// The parameters sit in the fragment, which browsers never send to a server:
// the client secret reaches no access log, CDN or Referer header. The page
// then talks only to the External API named by `/config.json` (never to a
// host named in the link, so a crafted link cannot send card details
// elsewhere), with the publishable key.
//
// Outcomes: `succeeded` and `requires_capture` end on the success view; a
// decline shows why and lets the customer try another card; 3-D Secure
// leaves for the bank's page (the simulator's) and comes back here, where
// the page waits for the result; `processing` is polled until final;
// network errors are retried with the same idempotency key.

import { CheckoutApi, NetworkError, intentIdOf, type CardError, type PaymentIntent, type Reply } from "./api.js";
import {
  MAX_CARD_DIGITS,
  brandLabel,
  caretAfterDigits,
  checkCvc,
  checkExpiry,
  checkNumber,
  cvcLength,
  detectBrand,
  digitsOnly,
  formatExpiry,
  formatNumber,
  maxLength,
  parseExpiry,
  type Problem,
} from "./card.js";
import { formatAmount } from "./money.js";

interface LinkParams {
  clientSecret: string;
  key: string;
  merchant: string;
  returnUrl: string | null;
}

/** Polling after `processing` or a 3-D Secure return: quick at first, then calmer. */
const POLL_DELAYS_MS = [500, 500, 1000, 1000, 2000];
const PROCESSING_POLL_LIMIT_MS = 120_000;
const AUTHENTICATION_POLL_LIMIT_MS = 30_000;
/** Automatic resends of a confirmation that got no answer, before asking the customer. */
const CONFIRM_RETRY_DELAYS_MS = [1000, 2000];
const SESSION_PREFIX = "snakepay.checkout.";

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`checkout page is missing #${id}`);
  return found as T;
}

const view = {
  loading: element<HTMLElement>("loading"),
  form: element<HTMLFormElement>("pay-form"),
  working: element<HTMLElement>("working"),
  result: element<HTMLElement>("result"),
};
const merchantName = element<HTMLElement>("merchant");
const amountText = element<HTMLElement>("amount");
const testBadge = element<HTMLElement>("test-mode");
const banner = element<HTMLElement>("form-error");
const bannerText = element<HTMLElement>("form-error-text");
const retryButton = element<HTMLButtonElement>("retry");
const payButton = element<HTMLButtonElement>("pay-button");
const brandText = element<HTMLElement>("card-brand");
const cvcHint = element<HTMLElement>("card-cvc-hint");
const workingText = element<HTMLElement>("working-text");
const resultTitle = element<HTMLElement>("result-title");
const resultText = element<HTMLElement>("result-text");
const resultAction = element<HTMLAnchorElement>("result-action");
const resultRetry = element<HTMLButtonElement>("result-retry");

interface Field {
  input: HTMLInputElement;
  error: HTMLElement;
  check: () => Problem;
}

const numberInput = element<HTMLInputElement>("card-number");
const expiryInput = element<HTMLInputElement>("card-expiry");
const cvcInput = element<HTMLInputElement>("card-cvc");

const fields: Field[] = [
  { input: numberInput, error: element("card-number-error"), check: () => checkNumber(numberInput.value) },
  { input: expiryInput, error: element("card-expiry-error"), check: () => checkExpiry(expiryInput.value, new Date()) },
  { input: cvcInput, error: element("card-cvc-error"), check: () => checkCvc(cvcInput.value, currentBrand()) },
];

let api: CheckoutApi;
let params: LinkParams;
let intentId: string;
let intent: PaymentIntent | null = null;
/** The confirmation last sent, kept so "Try again" resends it unchanged. */
let pending: { form: URLSearchParams; idempotencyKey: string } | null = null;
let retryAction: (() => void) | null = null;
/** Whether this page load is the return from the bank's 3-D Secure page. */
let returning = false;

function currentBrand() {
  return detectBrand(digitsOnly(numberInput.value));
}

function show(which: keyof typeof view): void {
  for (const [name, section] of Object.entries(view)) section.hidden = name !== which;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function amount(): string {
  return intent ? formatAmount(intent.amount, intent.currency, navigator.language) : "";
}

// ---------------------------------------------------------------- the link

function readLink(): LinkParams | null {
  const query = new URLSearchParams(location.search);
  const returnedIntent = query.get("payment_intent");
  if (returnedIntent) {
    // Back from 3-D Secure: the link's parameters were kept in this tab's
    // session (they were never sent to the bank's page).
    const saved = sessionStorage.getItem(SESSION_PREFIX + returnedIntent);
    if (saved) {
      const restored = JSON.parse(saved) as LinkParams;
      returning = true;
      history.replaceState(null, "", `${location.pathname}#${linkFragment(restored)}`);
      return restored;
    }
  }
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const clientSecret = fragment.get("client_secret");
  const key = fragment.get("key");
  if (!clientSecret || !key || !/^pk_(test|live)_/.test(key)) return null;
  return {
    clientSecret,
    key,
    merchant: fragment.get("merchant") ?? "",
    returnUrl: safeReturnUrl(fragment.get("return_url")),
  };
}

function linkFragment(link: LinkParams): string {
  const fragment = new URLSearchParams({ client_secret: link.clientSecret, key: link.key, merchant: link.merchant });
  if (link.returnUrl) fragment.set("return_url", link.returnUrl);
  return fragment.toString();
}

/** Only http(s) pages may be linked back to: never `javascript:` or `data:`. */
function safeReturnUrl(text: string | null): string | null {
  if (!text) return null;
  try {
    const url = new URL(text, location.href);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- rendering

function renderHeader(): void {
  if (!intent) return;
  merchantName.textContent = params.merchant || "Payment";
  amountText.textContent = amount();
  document.title = `Pay ${amount()}${params.merchant ? ` to ${params.merchant}` : ""}`;
  testBadge.hidden = intent.livemode;
  payButton.textContent = `Pay ${amount()}`;
}

/** Shows whatever the intent's state calls for. */
function render(from: PaymentIntent, error?: CardError): void {
  intent = from;
  renderHeader();
  switch (from.status) {
    case "succeeded":
      return finish("Payment successful", `${amount()} paid${params.merchant ? ` to ${params.merchant}` : ""}. Thank you!`);
    case "requires_capture":
      return finish(
        "Payment authorized",
        `${amount()} is reserved on your card; ${params.merchant || "the merchant"} will complete the charge.`,
      );
    case "canceled":
      return finish("Payment canceled", "This payment was canceled. No money was taken.", false);
    case "processing":
      void waitWhile("processing", "Processing your payment…", PROCESSING_POLL_LIMIT_MS);
      return;
    case "requires_action":
      return askForAuthentication(from);
    case "requires_payment_method":
    case "requires_confirmation": {
      showForm();
      const reason = error ?? from.last_payment_error;
      if (reason) showDecline(reason);
      return;
    }
  }
}

function finish(title: string, text: string, succeeded = true): void {
  sessionStorage.removeItem(SESSION_PREFIX + intentId);
  resultTitle.textContent = title;
  resultText.textContent = text;
  view.result.classList.toggle("success", succeeded);
  resultRetry.hidden = true;
  if (params.returnUrl) {
    resultAction.href = params.returnUrl;
    resultAction.textContent = params.merchant ? `Return to ${params.merchant}` : "Return to the shop";
    resultAction.hidden = false;
  } else {
    resultAction.hidden = true;
  }
  show("result");
  resultTitle.focus();
}

/** An end that is not the payment's: a broken link, or no answer. */
function problem(title: string, text: string, retry?: () => void, retryLabel = "Try again"): void {
  resultTitle.textContent = title;
  resultText.textContent = text;
  view.result.classList.remove("success");
  resultAction.hidden = true;
  resultRetry.hidden = !retry;
  resultRetry.textContent = retryLabel;
  retryAction = retry ?? null;
  show("result");
  resultTitle.focus();
}

function showForm(): void {
  const wasHidden = view.form.hidden;
  show("form");
  setBusy(false);
  if (wasHidden) numberInput.focus();
}

function setBusy(busy: boolean): void {
  view.form.setAttribute("aria-busy", String(busy));
  payButton.disabled = busy;
  payButton.textContent = busy ? "Processing…" : `Pay ${amount()}`;
}

function clearBanner(): void {
  banner.hidden = true;
  bannerText.textContent = "";
  retryButton.hidden = true;
}

function showBanner(message: string, retry?: () => void): void {
  bannerText.textContent = message;
  retryButton.hidden = !retry;
  retryAction = retry ?? null;
  banner.hidden = false;
}

const DECLINE_MESSAGES: Record<string, string> = {
  insufficient_funds: "Your card has insufficient funds. Try another card.",
  expired_card: "Your card has expired. Check the expiry date or try another card.",
  incorrect_cvc: "Your card's security code is incorrect. Check it and try again.",
  processing_error: "An error occurred while processing your card. Try again in a moment.",
  incorrect_number: "Your card number is incorrect. Check it or try another card.",
  authentication_required: "Your bank could not confirm this payment. Try again or use another card.",
};

/** A card error as the customer should read it, and where to look next. */
function showDecline(error: CardError): void {
  const code = error.decline_code ?? error.code ?? "";
  const message = DECLINE_MESSAGES[code] ?? DECLINE_MESSAGES[error.code ?? ""] ?? "Your card was declined. Try another card.";
  showBanner(message);
  const target = code === "incorrect_cvc" ? cvcInput : code === "expired_card" ? expiryInput : numberInput;
  target.focus();
  target.select();
}

// ---------------------------------------------------------------- the form

function showFieldProblem(field: Field, message: Problem): void {
  field.error.textContent = message ?? "";
  field.error.hidden = message === null;
  if (message === null) field.input.removeAttribute("aria-invalid");
  else field.input.setAttribute("aria-invalid", "true");
}

/** Reformats an input in place, keeping the caret after the same digit. */
function reformat(input: HTMLInputElement, format: (text: string) => string): void {
  const caret = input.selectionStart ?? input.value.length;
  const digitsBefore = digitsOnly(input.value.slice(0, caret)).length;
  const formatted = format(input.value);
  if (formatted === input.value) return;
  input.value = formatted;
  const position = caretAfterDigits(formatted, digitsBefore);
  input.setSelectionRange(position, position);
}

function onNumberInput(): void {
  const digits = digitsOnly(numberInput.value).slice(0, MAX_CARD_DIGITS);
  const brand = detectBrand(digits);
  reformat(numberInput, (text) => formatNumber(digitsOnly(text).slice(0, maxLength(brand))));
  brandText.textContent = brandLabel(brand);
  cvcInput.maxLength = cvcLength(brand);
  cvcHint.textContent = brand === "amex" ? "4 digits on the front of the card" : "3 digits on the back of the card";
}

function setUpForm(): void {
  numberInput.addEventListener("input", onNumberInput);
  expiryInput.addEventListener("input", () => reformat(expiryInput, formatExpiry));
  cvcInput.addEventListener("input", () => reformat(cvcInput, (text) => digitsOnly(text).slice(0, cvcLength(currentBrand()))));
  for (const field of fields) {
    // Judged when the customer leaves a field they typed in, and again as
    // they correct it, never while they type it for the first time.
    field.input.addEventListener("blur", () => {
      if (field.input.value.trim() !== "") showFieldProblem(field, field.check());
    });
    field.input.addEventListener("input", () => {
      if (field.input.hasAttribute("aria-invalid")) showFieldProblem(field, field.check());
    });
  }
  view.form.addEventListener("submit", (event) => {
    event.preventDefault();
    void submit();
  });
  retryButton.addEventListener("click", () => retryAction?.());
  resultRetry.addEventListener("click", () => retryAction?.());
}

async function submit(): Promise<void> {
  clearBanner();
  let firstInvalid: Field | null = null;
  for (const field of fields) {
    const message = field.check();
    showFieldProblem(field, message);
    if (message !== null && firstInvalid === null) firstInvalid = field;
  }
  if (firstInvalid) {
    firstInvalid.input.focus();
    return;
  }
  const expiry = parseExpiry(expiryInput.value);
  if (!expiry) return;
  const form = new URLSearchParams({
    client_secret: params.clientSecret,
    "payment_method_data[type]": "card",
    "payment_method_data[card][number]": digitsOnly(numberInput.value),
    "payment_method_data[card][exp_month]": String(expiry.month),
    "payment_method_data[card][exp_year]": String(expiry.year),
    "payment_method_data[card][cvc]": digitsOnly(cvcInput.value),
    // 3-D Secure comes back here; the link's parameters wait in this tab's
    // session rather than travel to the bank in the URL.
    return_url: `${location.origin}${location.pathname}?payment_intent=${encodeURIComponent(intentId)}`,
  });
  pending = { form, idempotencyKey: crypto.randomUUID() };
  await sendConfirmation();
}

async function sendConfirmation(): Promise<void> {
  if (!pending) return;
  const { form, idempotencyKey } = pending;
  clearBanner();
  setBusy(true);
  let reply: Reply | null = null;
  for (let attempt = 0; reply === null; attempt += 1) {
    try {
      const answer = await api.confirm(intentId, form, idempotencyKey);
      // A 5xx, a key still in use (409) or a rate limit (429) is answered the
      // same way as silence: the same request again, a little later.
      if (answer.status >= 500 || answer.status === 409 || answer.status === 429) {
        throw new NetworkError(`status ${answer.status}`);
      }
      reply = answer;
    } catch (error) {
      if (!(error instanceof NetworkError)) throw error;
      const delay = CONFIRM_RETRY_DELAYS_MS[attempt];
      if (delay === undefined) {
        setBusy(false);
        showBanner("We couldn't reach the payment service. Check your connection and try again.", () => {
          void sendConfirmation();
        });
        retryButton.focus();
        return;
      }
      await sleep(delay);
    }
  }
  pending = null;
  if (reply.intent && (reply.status === 200 || reply.status === 402)) {
    cvcInput.value = "";
    if (reply.status === 402) {
      // A decline: the intent is open again for another card.
      render(reply.intent, reply.error);
      return;
    }
    render(reply.intent);
    return;
  }
  if (reply.error?.code === "payment_intent_unexpected_state") {
    // Paid or canceled meanwhile (another tab, a retried request): show it as it is.
    await load();
    return;
  }
  setBusy(false);
  const param = reply.error?.param ?? "";
  const target = param.includes("cvc") ? cvcInput : param.includes("exp_") ? expiryInput : param.includes("number") ? numberInput : null;
  showBanner(reply.error?.message ?? "The payment could not be completed. Please try again.");
  target?.focus();
}

// ---------------------------------------------------------------- waiting

/** Polls the intent while it stays in `status`, then shows where it went. */
async function waitWhile(status: PaymentIntent["status"], text: string, limitMs: number): Promise<void> {
  workingText.textContent = text;
  show("working");
  const deadline = Date.now() + limitMs;
  for (let round = 0; Date.now() < deadline; round += 1) {
    await sleep(POLL_DELAYS_MS[Math.min(round, POLL_DELAYS_MS.length - 1)] ?? 2000);
    try {
      const reply = await api.retrieve(intentId, params.clientSecret);
      if (reply.intent && reply.intent.status !== status) {
        render(reply.intent);
        return;
      }
    } catch (error) {
      // A lost poll is no news; the next one may get through.
      if (!(error instanceof NetworkError)) throw error;
    }
  }
  if (status === "requires_action" && intent) {
    askForAuthentication(intent, true);
    return;
  }
  problem(
    "Still processing",
    "Your payment is taking longer than usual. You don't need to pay again: check its status in a moment.",
    () => void load(),
  );
}

function askForAuthentication(from: PaymentIntent, waitedAlready = false): void {
  const url = from.next_action?.redirect_to_url?.url;
  if (!url) {
    problem("Authentication needed", "Your bank needs to confirm this payment, but gave no page to do it on.");
    return;
  }
  if (returning && !waitedAlready) {
    // The bank has answered; its result reaches the platform in a moment.
    void waitWhile("requires_action", "Checking the result with your bank…", AUTHENTICATION_POLL_LIMIT_MS);
    return;
  }
  sessionStorage.setItem(SESSION_PREFIX + intentId, JSON.stringify(params));
  if (waitedAlready || view.form.hidden) {
    // Not straight after this page's confirmation: back without an answer
    // (the customer left the bank's page early, or opened the link again).
    // Going to the bank unasked would trap the Back button in a loop.
    problem(
      "Confirm with your bank",
      "Your bank needs you to confirm this payment before it can go through.",
      () => location.assign(url),
      "Continue to your bank",
    );
    return;
  }
  workingText.textContent = "Redirecting to your bank to confirm the payment…";
  show("working");
  location.assign(url);
}

// ---------------------------------------------------------------- start

async function load(): Promise<void> {
  show("loading");
  try {
    const reply = await api.retrieve(intentId, params.clientSecret);
    if (reply.intent) {
      render(reply.intent);
      return;
    }
    if (reply.status === 404 || reply.status === 401) {
      problem("Link not valid", "This payment link is invalid or has expired. Ask the shop for a new one.");
      return;
    }
    problem("Something went wrong", "The payment could not be loaded. Please try again.", () => void load());
  } catch (error) {
    if (!(error instanceof NetworkError)) throw error;
    problem("Connection problem", "We couldn't reach the payment service. Check your connection and try again.", () => void load());
  }
}

async function start(): Promise<void> {
  setUpForm();
  const link = readLink();
  const id = link ? intentIdOf(link.clientSecret) : null;
  if (!link || !id) {
    problem("Link not valid", "This payment link is incomplete. Ask the shop for a new one.");
    return;
  }
  params = link;
  intentId = id;
  merchantName.textContent = link.merchant || "Payment";
  let baseUrl: string;
  try {
    const response = await fetch("/config.json", { cache: "no-store" });
    const config = (await response.json()) as { api_base_url?: unknown };
    if (typeof config.api_base_url !== "string") throw new Error("no api_base_url");
    baseUrl = config.api_base_url.replace(/\/+$/, "");
  } catch {
    problem("Connection problem", "The checkout could not start. Please reload the page.", () => location.reload());
    return;
  }
  api = new CheckoutApi(baseUrl, link.key);
  // Back from the bank's page, a browser may show this page as it was
  // left ("Redirecting…"): ask again what the payment's state is.
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) void load();
  });
  await load();
}

void start();
