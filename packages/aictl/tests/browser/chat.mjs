// The chat panel in headless Chromium: a bad collection shows the server's error; a typed
// question streams its answer in and lists its sources; the API key is kept and sent.
// Options: {chromium, url, collection, question, apiKey, timeoutMs}.

import { finish, lastTurn, openPage, options, streamedTexts, waitForAnswer, watchStreaming } from "./common.mjs";

const opts = options();
const { browser, page, problems, httpErrors } = await openPage(opts);
const result = { problems, httpErrors };
try {
  const authorizations = [];
  page.on("request", (request) => {
    if (request.method() === "POST") authorizations.push(request.headers().authorization ?? null);
  });

  // The API key is kept across a reload.
  await page.fill("#api-key", opts.apiKey);
  await page.dispatchEvent("#api-key", "change");
  await page.reload();
  await page.waitForSelector("main[data-ready=true]");
  result.apiKeyAfterReload = await page.inputValue("#api-key");

  // A collection name the server refuses: its error, shown as the server wrote it.
  await page.fill("#collection", "not a name!");
  await page.fill("#question", opts.question);
  await page.click("#send");
  result.refused = await waitForAnswer(page, "typed", opts.timeoutMs);

  // The question, against the real collection.
  await page.fill("#collection", opts.collection);
  await page.dispatchEvent("#collection", "change");
  await watchStreaming(page);
  await page.fill("#question", opts.question);
  await page.press("#question", "Enter");
  result.answered = await waitForAnswer(page, "typed", opts.timeoutMs);
  result.streamedTexts = await streamedTexts(page);
  result.authorizations = authorizations;
  result.sendEnabled = await page.isEnabled("#send");
} catch (error) {
  result.failure = String(error);
  result.last = await lastTurn(page).catch(() => null);
}
await finish(browser, result);
