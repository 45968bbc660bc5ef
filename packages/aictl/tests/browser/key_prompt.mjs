// Access control in headless Chromium: a question sent without a key makes the page ask for
// one (the field focused, the reason said); a wrong key is refused and asked for again; the
// right one sends the same question again, and its answer streams in with its sources.
// Options: {chromium, url, collection, question, wrongKey, apiKey, timeoutMs}.

import { finish, lastTurn, openPage, options, waitForAnswer } from "./common.mjs";

const PROMPT_TIMEOUT_MS = 60_000;

/** What the key prompt shows once it is open with `reason` (missing or refused). */
async function keyPrompt(page, reason) {
  await page.waitForSelector(`#key-prompt[data-reason=${reason}]:not([hidden])`, {
    timeout: PROMPT_TIMEOUT_MS,
  });
  return page.evaluate(() => {
    const prompt = document.getElementById("key-prompt");
    const turn = document.querySelector("#log > .turn:last-child");
    return {
      visible: !prompt.hidden,
      reason: prompt.dataset.reason,
      title: document.getElementById("key-prompt-title").textContent,
      message: document.getElementById("key-prompt-message").textContent,
      focused: document.activeElement?.id ?? null,
      turnState: turn?.dataset.state ?? null,
    };
  });
}

const opts = options();
const { browser, page, problems, httpErrors } = await openPage(opts);
const result = { problems, httpErrors };
try {
  const authorizations = [];
  page.on("request", (request) => {
    if (request.method() === "POST") authorizations.push(request.headers().authorization ?? null);
  });
  await page.fill("#collection", opts.collection);
  await page.dispatchEvent("#collection", "change");

  // No key yet: the page asks for one.
  await page.fill("#question", opts.question);
  await page.press("#question", "Enter");
  result.asked = await keyPrompt(page, "missing");

  // Typed where the focus is: a wrong key is refused, and the page asks again.
  await page.keyboard.type(opts.wrongKey);
  await page.keyboard.press("Enter");
  result.refused = await keyPrompt(page, "refused");

  // The right key: the question goes again and is answered.
  await page.keyboard.type(opts.apiKey);
  await page.keyboard.press("Enter");
  result.answered = await waitForAnswer(page, "typed", opts.timeoutMs);
  result.promptVisibleAfter = await page.isVisible("#key-prompt");
  result.storedKey = await page.evaluate(() => localStorage.getItem("aictl.apiKey"));
  result.pageUrl = page.url();
  result.authorizations = authorizations;
} catch (error) {
  result.failure = String(error);
  result.last = await lastTurn(page).catch(() => null);
}
await finish(browser, result);
