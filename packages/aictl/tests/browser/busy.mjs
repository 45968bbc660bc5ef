// A busy platform in headless Chromium: while other callers keep the chat handler full (one
// answer being worked on, one waiting: the test deploys it with room for no more), the page's
// question is answered 503 with Retry-After. The turn says the platform is busy, the page asks
// again after that wait, and once the other callers stop, the answer streams in.
// Options: {chromium, url, collection, question, holdQuestion, apiKey, timeoutMs}.

import { finish, lastTurn, openPage, options, waitForAnswer } from "./common.mjs";

const BUSY_TIMEOUT_MS = 60_000;
const FILLERS = 3; // one more than the handler has room for, so that it stays full

const opts = options();
const chatUrl = new URL("/chat", opts.url).href;
let filling = true;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One caller that asks again as soon as it has its answer (or, refused, 100 ms later) until
 * `filling` ends; the statuses it got.
 */
async function filler() {
  const statuses = [];
  while (filling) {
    const response = await fetch(chatUrl, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "text/event-stream",
        Authorization: `Bearer ${opts.apiKey}`,
      },
      body: JSON.stringify({ query: opts.holdQuestion, collection: opts.collection, stream: true }),
    });
    await response.text();
    statuses.push(response.status);
    if (response.status !== 200) await sleep(100);
  }
  return statuses;
}

const { browser, page, problems, httpErrors } = await openPage(opts);
const result = { problems, httpErrors };
let fillers = [];
try {
  await page.fill("#api-key", opts.apiKey);
  await page.dispatchEvent("#api-key", "change");
  await page.fill("#collection", opts.collection);
  await page.dispatchEvent("#collection", "change");

  fillers = Array.from({ length: FILLERS }, filler);
  await sleep(1000); // they reach the handler
  await page.fill("#question", opts.question);
  await page.press("#question", "Enter");
  await page.waitForSelector("#log > .turn:last-child[data-state=busy]", { timeout: BUSY_TIMEOUT_MS });
  result.busy = await lastTurn(page);
  filling = false;

  result.answered = await waitForAnswer(page, "typed", opts.timeoutMs);
} catch (error) {
  result.failure = String(error);
  result.last = await lastTurn(page).catch(() => null);
}
filling = false;
result.fillerStatuses = (await Promise.all(fillers)).flat();
await finish(browser, result);
