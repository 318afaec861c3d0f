// The demo shop's page: lists the products the web service sells for the
// demo merchant. Buying posts a plain form to `/demo/pay`; the server creates
// the PaymentIntent with the merchant's secret key (which never reaches the
// browser) and redirects to the hosted checkout.

import { formatAmount } from "./money.js";

interface Product {
  id: string;
  name: string;
  description: string;
  amount: number;
  currency: string;
}

async function start(): Promise<void> {
  const status = document.getElementById("shop-status");
  const list = document.getElementById("products");
  const template = document.getElementById("product-template") as HTMLTemplateElement | null;
  if (!status || !list || !template) return;
  let products: Product[];
  try {
    const response = await fetch("/demo/products.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`status ${response.status}`);
    products = (await response.json()) as Product[];
  } catch {
    status.textContent = "The products could not be loaded. Is the web service running? Reload to try again.";
    return;
  }
  for (const product of products) {
    const item = template.content.cloneNode(true) as DocumentFragment;
    const price = formatAmount(product.amount, product.currency, navigator.language);
    item.querySelector(".product-name")!.textContent = product.name;
    item.querySelector(".product-description")!.textContent = product.description;
    (item.querySelector("input[name=product]") as HTMLInputElement).value = product.id;
    const button = item.querySelector("button")!;
    button.textContent = `Buy for ${price}`;
    button.setAttribute("aria-label", `Buy ${product.name} for ${price}`);
    list.append(item);
  }
  status.textContent = "";
  status.hidden = true;
}

void start();
