// Push-to-talk in headless Chromium, the fake microphone playing a WAV file: hold Talk
// until the page has recorded `holdMs` of audio, let go, then wait for the transcript,
// the streamed answer and its spoken sentences played one after another.
// Options: {chromium, url, fakeAudio, collection, apiKey?, holdMs, timeoutMs}.

import { finish, lastTurn, openPage, options, waitForAnswer } from "./common.mjs";

const opts = options();
const { browser, page, problems, httpErrors } = await openPage(opts);
const result = { problems, httpErrors };
try {
  const posted = [];
  page.on("request", (request) => {
    if (request.method() === "POST") {
      posted.push({
        url: new URL(request.url()).pathname,
        contentType: request.headers()["content-type"] ?? "",
        bytes: request.postDataBuffer()?.length ?? 0,
      });
    }
  });
  await page.fill("#collection", opts.collection);
  await page.dispatchEvent("#collection", "change");
  if (opts.apiKey) {
    await page.fill("#api-key", opts.apiKey);
    await page.dispatchEvent("#api-key", "change");
  }

  const talk = page.locator("#talk");
  await talk.hover();
  await page.mouse.down();
  await page.waitForSelector("#talk[data-state=recording]");
  result.pressedWhileRecording = await talk.getAttribute("aria-pressed");
  await page.waitForFunction(
    (ms) => Number(document.getElementById("voice-status").dataset.recordedMs) >= ms,
    opts.holdMs,
    { timeout: opts.holdMs + 30_000 },
  );
  await page.mouse.up();
  result.recordedMs = Number(await page.getAttribute("#voice-status", "data-recorded-ms"));

  result.answered = await waitForAnswer(page, "voice", opts.timeoutMs);
  if (result.answered.state === "done" && Number(result.answered.data.audioReceived) > 0) {
    // Every clip that arrived is played, one after the other.
    await page.waitForFunction(
      () => {
        const turn = document.querySelector("#log > .turn[data-kind=voice]");
        return Number(turn.dataset.audioPlayed) >= Number(turn.dataset.audioReceived);
      },
      null,
      { timeout: opts.timeoutMs },
    );
    result.answered = await lastTurn(page);
  }
  result.posted = posted;
  result.talkState = await talk.getAttribute("data-state");
} catch (error) {
  result.failure = String(error);
  result.last = await lastTurn(page).catch(() => null);
}
await finish(browser, result);
