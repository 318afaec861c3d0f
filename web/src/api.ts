// The two External API calls a browser may make with a publishable key:
// retrieve and confirm a PaymentIntent with its client secret.

export interface CardError {
  type?: string;
  code?: string;
  decline_code?: string | null;
  message?: string;
  param?: string | null;
  payment_intent?: PaymentIntent;
}

export interface PaymentIntent {
  id: string;
  object: "payment_intent";
  amount: number;
  currency: string;
  status:
    | "requires_payment_method"
    | "requires_confirmation"
    | "requires_action"
    | "processing"
    | "requires_capture"
    | "canceled"
    | "succeeded";
  description: string | null;
  livemode: boolean;
  last_payment_error: CardError | null;
  next_action: { type: string; redirect_to_url?: { url: string; return_url: string | null } } | null;
}

/** An answer from the API, successful or not. */
export interface Reply {
  status: number;
  intent?: PaymentIntent;
  error?: CardError;
}

/** The request never got an answer: offline, DNS, CORS, reset connection. */
export class NetworkError extends Error {}

/** How long one request may take before it counts as a network error. */
const REQUEST_TIMEOUT_MS = 30_000;

export class CheckoutApi {
  constructor(
    private readonly baseUrl: string,
    private readonly publishableKey: string,
  ) {}

  retrieve(intentId: string, clientSecret: string): Promise<Reply> {
    const query = new URLSearchParams({ client_secret: clientSecret });
    return this.send("GET", `/v1/payment_intents/${encodeURIComponent(intentId)}?${query}`);
  }

  /**
   * Confirms with card details. `idempotencyKey` stays the same when the
   * same confirmation is sent again after a network error, so a request
   * that did arrive is answered from the record, never paid twice.
   */
  confirm(intentId: string, form: URLSearchParams, idempotencyKey: string): Promise<Reply> {
    return this.send("POST", `/v1/payment_intents/${encodeURIComponent(intentId)}/confirm`, form, idempotencyKey);
  }

  private async send(method: string, path: string, body?: URLSearchParams, idempotencyKey?: string): Promise<Reply> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.publishableKey}` };
    if (body) headers["Content-Type"] = "application/x-www-form-urlencoded";
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    const init: RequestInit = {
      method,
      headers,
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    };
    if (body) init.body = body;
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, init);
    } catch (cause) {
      throw new NetworkError(cause instanceof Error ? cause.message : String(cause));
    }
    let json: unknown;
    try {
      json = await response.json();
    } catch {
      json = null;
    }
    const object = (json ?? {}) as { object?: string; error?: CardError };
    if (response.ok && object.object === "payment_intent") {
      return { status: response.status, intent: json as PaymentIntent };
    }
    const reply: Reply = { status: response.status };
    if (object.error) {
      reply.error = object.error;
      if (object.error.payment_intent) reply.intent = object.error.payment_intent;
    }
    return reply;
  }
}

/** The intent ID inside a client secret (`pi_…_secret_…`). */
export function intentIdOf(clientSecret: string): string | null {
  const match = /^(pi_[A-Za-z0-9]+)_secret_[A-Za-z0-9]+$/.exec(clientSecret);
  return match?.[1] ?? null;
}
