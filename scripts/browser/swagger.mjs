// Drives Swagger UI (/docs) in headless Chromium the way a person would: Authorize with
// the bearer token, "Try it out" on "Create a product", then on "Get a product" with the
// new id, and checks what the page shows. Run by scripts/browser-test.sh.
//
//   node swagger.mjs BASE_URL API_TOKEN SCREENSHOT_PATH
//
// Chromium is the system one (/usr/bin/chromium, or $CHROMIUM); Playwright never
// downloads a browser here. Requests to anything but BASE_URL are blocked.

import { chromium } from "playwright-core";

const [baseUrl, token, screenshot] = process.argv.slice(2);
if (!baseUrl || !token || !screenshot) {
  console.error("usage: node swagger.mjs BASE_URL API_TOKEN SCREENSHOT_PATH");
  process.exit(2);
}
const TIMEOUT_MS = 20_000;

const step = (text) => console.log(`  - ${text}`);

function fail(message) {
  throw new Error(message);
}

// Opens an operation, clicks "Try it out", lets `fill` enter the inputs, clicks
// "Execute" and returns { status, body, curl } as the page shows them.
async function tryItOut(page, operationId, fill) {
  const op = page.locator(`#operations-Products-${operationId}`);
  await op.waitFor({ state: "visible" });
  if (!(await op.locator(".opblock-body").isVisible())) {
    await op.locator(".opblock-summary").first().click();
  }
  await op.locator("button.try-out__btn").click();
  await fill(op);
  await op.locator("button.execute").click();
  const row = op.locator(".live-responses-table tbody tr.response").first();
  await row.waitFor({ state: "visible" });
  const status = (await row.locator(".response-col_status").innerText()).trim();
  const texts = await row.locator(".response-col_description pre").allInnerTexts();
  let body = null;
  for (const text of texts) {
    try {
      body = JSON.parse(text);
      break;
    } catch {
      // response headers, not the body
    }
  }
  const curl = (await op.locator(".curl-command").innerText().catch(() => "")).trim();
  return { status, body, curl };
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
let page;
let failed = false;
try {
  console.log(`chromium ${browser.version()}`);
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  context.setDefaultTimeout(TIMEOUT_MS);
  const origin = new URL(baseUrl).origin;
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith("data:") || url.startsWith("blob:")) {
      return route.continue();
    }
    console.log(`    (blocked ${url})`);
    return route.abort();
  });
  page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));

  step(`open ${baseUrl}/docs`);
  const response = await page.goto(`${baseUrl}/docs`);
  if (response?.status() !== 200) fail(`/docs answered ${response?.status()}`);
  await page.locator(".swagger-ui .info .title").waitFor({ state: "visible" });
  const title = (await page.locator(".swagger-ui .info .title").innerText()).trim();
  step(`page shows "${title.replace(/\s+/g, " ")}"`);

  step("Authorize with the bearer token");
  await page.locator(".auth-wrapper button.authorize").click();
  const modal = page.locator(".modal-ux");
  await modal.locator('input[aria-label="auth-bearer-value"]').fill(token);
  await modal.locator(".auth-btn-wrapper button.authorize").click();
  await modal.locator("button.btn-done").click();
  await page.locator(".auth-wrapper button.authorize.locked").waitFor({ state: "visible" });

  const sku = `UI-${Date.now()}`;
  const product = {
    sku,
    name: "Swagger UI keyboard",
    description: "created through Try it out",
    price_cents: 4999,
    stock: 3,
    category: "keyboards",
  };
  step(`"Create a product" (POST /api/products), sku ${sku}`);
  const created = await tryItOut(page, "createProduct", async (op) => {
    await op.locator("textarea.body-param__text").fill(JSON.stringify(product, null, 2));
  });
  if (!created.curl.includes("Authorization: Bearer")) {
    fail(`the request did not carry the bearer token:\n${created.curl}`);
  }
  if (created.status !== "201") {
    fail(`create: expected 201, the page shows ${created.status}: ${JSON.stringify(created.body)}`);
  }
  const id = created.body?.id;
  if (!Number.isInteger(id) || created.body.sku !== sku || created.body.version !== 1) {
    fail(`create: unexpected product ${JSON.stringify(created.body)}`);
  }
  step(`page shows 201 with product ${id} (sku ${created.body.sku}, version 1)`);

  step(`"Get a product" (GET /api/products/${id})`);
  const fetched = await tryItOut(page, "getProduct", async (op) => {
    await op.locator('tr[data-param-name="id"] input').fill(String(id));
  });
  if (fetched.status !== "200") {
    fail(`get: expected 200, the page shows ${fetched.status}: ${JSON.stringify(fetched.body)}`);
  }
  if (fetched.body?.id !== id || fetched.body?.sku !== sku) {
    fail(`get: unexpected product ${JSON.stringify(fetched.body)}`);
  }
  step(`page shows 200 with sku ${fetched.body.sku}`);

  if (pageErrors.length > 0) fail(`JavaScript errors on the page:\n${pageErrors.join("\n")}`);
} catch (error) {
  failed = true;
  console.error(`FAILED: ${error.message}`);
} finally {
  if (page) {
    await page.screenshot({ path: screenshot, fullPage: true }).catch((error) => {
      console.error(`could not save the screenshot: ${error.message}`);
    });
    console.log(`screenshot: ${screenshot}`);
  }
  await browser.close();
}
process.exit(failed ? 1 : 0);
