// Shared by the browser scripts: start headless Chromium with Playwright, print JSON.
// Each script takes one JSON argument (its options) and prints one JSON line (its result).

import { chromium } from "playwright-core";

/** The options of this run: the script's one JSON argument. */
export function options() {
  if (process.argv.length < 3) throw new Error("usage: node SCRIPT.mjs '{\"url\": ...}'");
  return JSON.parse(process.argv[2]);
}

/**
 * Headless Chromium (`chromium` = path of the binary) with a page on `url`, its console
 * errors and failed requests collected; `fakeAudio` = a WAV file the fake microphone plays.
 */
export async function openPage({ chromium: executablePath, url, fakeAudio }) {
  const args = [
    "--no-sandbox", // tests run as root in a container
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
  ];
  if (fakeAudio) {
    args.push("--use-fake-device-for-media-stream", `--use-file-for-fake-audio-capture=${fakeAudio}`);
  }
  const browser = await chromium.launch({ executablePath, headless: true, args });
  const page = await browser.newPage();
  const problems = [];
  const httpErrors = [];
  page.on("console", (message) => {
    // A failed load is listed in httpErrors, with its method, path and status.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
      problems.push(`console: ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => {
    problems.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) {
      const { pathname } = new URL(response.url());
      httpErrors.push({ method: response.request().method(), path: pathname, status: response.status() });
    }
  });
  await page.goto(url);
  await page.waitForSelector("main[data-ready=true]");
  return { browser, page, problems, httpErrors };
}

/** What the log shows for the last turn. */
export async function lastTurn(page) {
  return page.evaluate(() => {
    const turns = document.querySelectorAll("#log > .turn");
    const turn = turns[turns.length - 1];
    if (!turn) return null;
    const error = document.getElementById("error");
    return {
      turns: turns.length,
      kind: turn.dataset.kind,
      state: turn.dataset.state,
      data: { ...turn.dataset },
      question: turn.querySelector(".question .text")?.textContent ?? "",
      answer: turn.querySelector(".answer > .text")?.textContent ?? "",
      turnError: turn.querySelector(".turn-error")?.textContent ?? null,
      sources: [...turn.querySelectorAll(".source")].map((item) => ({
        id: item.dataset.id,
        title: item.querySelector(".source-title")?.textContent ?? "",
        score: Number(item.querySelector(".source-score")?.textContent),
        snippet: item.querySelector(".source-snippet")?.textContent ?? "",
      })),
      error: error.hidden ? null : { code: error.dataset.code, message: error.textContent },
    };
  });
}

/** Wait until the last turn, of `kind`, is done or failed. */
export async function waitForAnswer(page, kind, timeout) {
  await page.waitForSelector(
    `#log > .turn:last-child[data-kind=${kind}]:is([data-state=done], [data-state=error])`,
    { timeout },
  );
  return lastTurn(page);
}

/**
 * Watch the answer text of the turns while they stream: how many different non-empty
 * texts the answer showed before the turn was done (more than one: it streamed in).
 */
export async function watchStreaming(page) {
  await page.evaluate(() => {
    window.__streamedTexts = new Set();
    new MutationObserver(() => {
      for (const turn of document.querySelectorAll("#log > .turn[data-state=streaming]")) {
        const text = turn.querySelector(".answer > .text")?.textContent;
        if (text) window.__streamedTexts.add(text);
      }
    }).observe(document.getElementById("log"), {
      subtree: true,
      childList: true,
      characterData: true,
      attributes: true,
    });
  });
}

export async function streamedTexts(page) {
  return page.evaluate(() => window.__streamedTexts.size);
}

/** Print the result as one JSON line, close the browser. */
export async function finish(browser, result) {
  await browser.close();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
