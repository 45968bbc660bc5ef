// The platform's web page: chat with the answer streaming in and its sources listed, and
// push-to-talk voice with the answer spoken back sentence by sentence.
// Plain modern JavaScript: no framework, no build step, nothing loaded from elsewhere.
// It calls POST /chat and POST /voice/stream on its own origin (the Serve proxy). When the
// platform answers 401 (it has API keys), the page asks for the key and sends the request again.
// When it answers 503 with Retry-After (its queues are full), the page says so in the turn and
// sends the request again after that many seconds, for up to BUSY_WAIT_LIMIT_S in all.

const CHAT_URL = "/chat";
const VOICE_URL = "/voice/stream";
const WORKLET_URL = new URL("recorder-worklet.js", import.meta.url);
const STORAGE = { apiKey: "aictl.apiKey", collection: "aictl.collection" };
const DEFAULT_COLLECTION = "default";
const HOLD_MS = 350; // a press shorter than this starts recording until the next press
const MIN_RECORDING_MS = 250;
const MAX_RECORDING_MS = 60_000;
const SNIPPET_CHARS = 280;
const BUSY_WAIT_LIMIT_S = 120;
const HISTORY_TURNS = 3; // earlier typed questions and answers sent along, for follow-ups

/** The typed conversation so far: [{role, content}], oldest first, for `history`. */
const conversation = [];

const $ = (id) => document.getElementById(id);
const el = {
  main: $("main"),
  log: $("log"),
  empty: $("empty"),
  error: $("error"),
  ask: $("ask"),
  question: $("question"),
  send: $("send"),
  talk: $("talk"),
  stopAudio: $("stop-audio"),
  voiceStatus: $("voice-status"),
  collection: $("collection"),
  apiKey: $("api-key"),
  keyPrompt: $("key-prompt"),
  keyPromptTitle: $("key-prompt-title"),
  keyPromptMessage: $("key-prompt-message"),
  keyPromptInput: $("key-prompt-input"),
  keyPromptCancel: $("key-prompt-cancel"),
};

// --- errors ---------------------------------------------------------------------------

/** An error in the platform's shape: {"error": {"code", "message"}}. */
class ApiError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function apiErrorOf(body, fallback) {
  const error = body && typeof body === "object" ? body.error : null;
  if (error && typeof error.message === "string") {
    return new ApiError(error.code || "internal", error.message);
  }
  return new ApiError("internal", fallback);
}

async function errorOfResponse(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: described by its status below
  }
  return apiErrorOf(body, `The server answered ${response.status} ${response.statusText}`.trim());
}

function showError(error) {
  const code = error instanceof ApiError ? error.code : "internal";
  el.error.textContent = error.message || String(error);
  el.error.dataset.code = code;
  el.error.hidden = false;
}

function clearError() {
  el.error.hidden = true;
  el.error.textContent = "";
  delete el.error.dataset.code;
}

// --- settings -------------------------------------------------------------------------

// The API key is kept in localStorage (this browser, across visits and tabs) rather than
// sessionStorage: the page and all it runs come from the platform's own origin under a CSP
// that allows no other script, so nothing else can read it, and the user of a platform with
// keys is not asked again on every visit. Emptying the field forgets it. The key is only
// ever sent in the Authorization header, never put in a URL.
function storeApiKey(key) {
  el.apiKey.value = key;
  if (key) localStorage.setItem(STORAGE.apiKey, key);
  else localStorage.removeItem(STORAGE.apiKey);
}

function loadSettings() {
  el.apiKey.value = localStorage.getItem(STORAGE.apiKey) || "";
  el.collection.value = localStorage.getItem(STORAGE.collection) || DEFAULT_COLLECTION;
  el.apiKey.addEventListener("change", () => storeApiKey(el.apiKey.value.trim()));
  el.collection.addEventListener("change", () => {
    localStorage.setItem(STORAGE.collection, collection());
    conversation.length = 0; // another knowledge base: earlier turns are not about it
  });
  $("settings").addEventListener("submit", (event) => event.preventDefault());
}

function collection() {
  return el.collection.value.trim() || DEFAULT_COLLECTION;
}

function authHeaders() {
  const key = el.apiKey.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// --- HTTP and server-sent events ------------------------------------------------------

/** The whole seconds of a response's Retry-After, or null (absent, or given as a date). */
function retryAfterSeconds(response) {
  const value = response.headers.get("Retry-After");
  return value && /^\d+$/.test(value.trim()) ? Number(value) : null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * POST for `turn` and return the response; a failed request throws an ApiError. A 401 is
 * code `unauthorized`, with `keySent` saying whether a key went with it (then it was
 * refused). A 503 with Retry-After is sent again after that wait, shown in the turn, while
 * the waits add up to at most BUSY_WAIT_LIMIT_S; past that its error is thrown.
 */
async function post(url, body, turn, headers = {}) {
  const auth = authHeaders();
  let response;
  for (let waitedS = 0; ; ) {
    try {
      response = await fetch(url, {
        method: "POST",
        body,
        headers: { Accept: "text/event-stream", ...auth, ...headers },
      });
    } catch (error) {
      throw new ApiError("unavailable", `Could not reach ${url}: ${error.message}`);
    }
    const retryAfter = response.status === 503 ? retryAfterSeconds(response) : null;
    if (retryAfter === null) break;
    const waitS = Math.max(1, retryAfter); // at least a second apart, even at Retry-After: 0
    if (waitedS + waitS > BUSY_WAIT_LIMIT_S) break;
    await response.text(); // read to its end, not aborted
    turn.waitBusy(waitS);
    await sleep(waitS * 1000);
    waitedS += waitS;
    turn.restart();
  }
  if (!response.ok) {
    const error = await errorOfResponse(response);
    if (response.status === 401) {
      error.code = "unauthorized";
      error.keySent = "Authorization" in auth;
    }
    throw error;
  }
  return response;
}

function parseEventBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return null;
  const text = data.join("\n");
  try {
    return { event, data: JSON.parse(text) };
  } catch {
    return { event, data: text };
  }
}

/** The server-sent events of a streamed response, as {event, data} (data parsed as JSON). */
async function* serverEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = (buffer + value).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const parsed = parseEventBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (parsed) yield parsed;
      }
    }
    const rest = parseEventBlock(buffer);
    if (rest) yield rest;
  } finally {
    reader.releaseLock();
  }
}

// --- the conversation -----------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function sourceTitle(source) {
  const meta = source.metadata || {};
  return meta.title || meta.path || meta.source || meta.doc_id || source.id;
}

/** One question and its answer in the log. */
class Turn {
  constructor(kind, question) {
    this.item = element("li", "turn");
    this.item.dataset.kind = kind;
    this.item.dataset.state = "streaming";
    this.item.dataset.textEvents = "0";
    this.questionText = element("span", "text", question);
    const asked = element("p", "question");
    asked.append(element("span", "who", kind === "voice" ? "You said" : "You"), this.questionText);
    this.answer = element("div", "answer");
    this.answer.setAttribute("aria-busy", "true");
    this.answerText = element("p", "text");
    this.answer.append(element("span", "who", "Assistant"), this.answerText);
    this.item.append(asked, this.answer);
    el.empty.hidden = true;
    el.log.append(this.item);
    this.scroll();
  }

  scroll() {
    this.item.scrollIntoView({ block: "end", behavior: "smooth" });
  }

  setQuestion(text) {
    this.questionText.textContent = text;
  }

  append(piece) {
    this.answerText.textContent += piece;
    this.item.dataset.textEvents = String(Number(this.item.dataset.textEvents) + 1);
    this.scroll();
  }

  finish(response, sources, rewrittenQuery) {
    if (typeof response === "string") this.answerText.textContent = response;
    if (rewrittenQuery) {
      // A follow-up: the question the knowledge base was searched for, in its own words.
      const note = element("p", "rewritten", `Searched for: ${rewrittenQuery}`);
      this.answer.append(note);
    }
    this.showSources(sources || []);
    this.answer.removeAttribute("aria-busy");
    this.item.dataset.state = "done";
    this.scroll();
  }

  /** The request was refused for want of a key; it waits here until one is entered. */
  waitForKey() {
    this.answer.removeAttribute("aria-busy");
    this.item.dataset.state = "needs-key";
    this.answerText.textContent = "Waiting for the API key…";
  }

  /** Refused as busy: say so; the request is sent again after `seconds`. */
  waitBusy(seconds) {
    this.item.dataset.state = "busy";
    this.item.dataset.busyRetries = String(Number(this.item.dataset.busyRetries || 0) + 1);
    this.answerText.textContent = `The platform is busy; asking again in ${seconds} s…`;
  }

  /** Send again: back to an empty answer, streaming. */
  restart() {
    this.answerText.textContent = "";
    this.item.dataset.textEvents = "0";
    this.item.dataset.state = "streaming";
    this.answer.setAttribute("aria-busy", "true");
  }

  fail(error) {
    if (this.item.dataset.state === "needs-key") this.answerText.textContent = "";
    this.answer.removeAttribute("aria-busy");
    this.item.dataset.state = "error";
    const note = element("p", "turn-error", error.message || String(error));
    this.answer.append(note);
  }

  showSources(sources) {
    const section = element("section", "sources");
    const heading = element("h3", "", sources.length ? "Sources" : "No sources found");
    section.append(heading);
    if (sources.length) {
      const list = element("ol");
      for (const source of sources) {
        const item = element("li", "source");
        item.dataset.id = source.id;
        const head = element("p", "source-head");
        head.append(element("span", "source-title", sourceTitle(source)));
        const score = element("span", "source-score", Number(source.score).toFixed(3));
        score.title = "relevance score";
        head.append(score);
        const text = source.text || "";
        const snippet = text.length > SNIPPET_CHARS ? `${text.slice(0, SNIPPET_CHARS)}…` : text;
        item.append(head, element("p", "source-snippet", snippet));
        list.append(item);
      }
      section.append(list);
    }
    this.answer.append(section);
  }
}

let busy = false;

function setBusy(value) {
  busy = value;
  el.send.disabled = value;
  el.talk.disabled = value && el.talk.dataset.state !== "recording";
  el.main.setAttribute("aria-busy", String(value));
}

// --- asking for the API key ----------------------------------------------------------

/** The request that waits for a key: {turn, retry}. At most one at a time. */
let waitingForKey = null;

function isUnauthorized(error) {
  return error instanceof ApiError && error.code === "unauthorized";
}

/** Show the key prompt, focused; `retry()` sends the request of `turn` again once a key is in. */
function askForKey(error, turn, retry) {
  giveUpWaiting();
  clearError();
  waitingForKey = { turn, retry };
  turn.waitForKey();
  const refused = Boolean(error.keySent);
  el.keyPrompt.dataset.reason = refused ? "refused" : "missing";
  el.keyPromptTitle.textContent = refused
    ? "The API key was refused"
    : "This platform needs an API key";
  el.keyPromptMessage.textContent = refused
    ? "Check the key and enter it again; your request is then sent again."
    : "Enter your API key and your request is sent again.";
  el.keyPrompt.hidden = false;
  el.keyPromptInput.value = "";
  el.keyPromptInput.focus();
  el.keyPrompt.scrollIntoView({ block: "nearest" });
}

function hideKeyPrompt() {
  el.keyPrompt.hidden = true;
  delete el.keyPrompt.dataset.reason;
}

/** The request waiting for a key is not sent (cancelled, or another one was asked). */
function giveUpWaiting() {
  const waiting = waitingForKey;
  waitingForKey = null;
  hideKeyPrompt();
  if (waiting) {
    waiting.turn.fail(new ApiError("unauthorized", "Not sent: the platform needs an API key."));
  }
}

function setUpKeyPrompt() {
  el.keyPrompt.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = el.keyPromptInput.value.trim();
    if (!key || busy) return;
    storeApiKey(key);
    el.keyPromptInput.value = "";
    const waiting = waitingForKey;
    waitingForKey = null;
    hideKeyPrompt();
    if (waiting) waiting.retry();
  });
  const cancel = () => {
    giveUpWaiting();
    el.question.focus();
  };
  el.keyPromptCancel.addEventListener("click", cancel);
  el.keyPrompt.addEventListener("keydown", (event) => {
    if (event.key === "Escape") cancel();
  });
}

// --- asking ---------------------------------------------------------------------------

async function askTyped(question, turn = new Turn("typed", question)) {
  clearError();
  turn.restart();
  setBusy(true);
  try {
    const history = conversation.slice(-2 * HISTORY_TURNS);
    const body = JSON.stringify({
      query: question,
      collection: collection(),
      history,
      stream: true,
    });
    const response = await post(CHAT_URL, body, turn, { "Content-Type": "application/json" });
    let finished = false;
    for await (const { event, data } of serverEvents(response)) {
      if (event === "text") turn.append(data.text);
      else if (event === "done") {
        turn.finish(data.response, data.sources, data.rewritten_query);
        conversation.push(
          { role: "user", content: question },
          { role: "assistant", content: data.response },
        );
        finished = true;
      } else if (event === "error") throw apiErrorOf(data, "The answer failed.");
    }
    if (!finished) throw new ApiError("internal", "The answer stopped before it was complete.");
  } catch (error) {
    if (isUnauthorized(error)) {
      askForKey(error, turn, () => askTyped(question, turn));
    } else {
      turn.fail(error);
      showError(error);
    }
  } finally {
    setBusy(false);
  }
}

// --- audio: WAV in and out ------------------------------------------------------------

/** The bytes of a 16-bit PCM mono WAV file of float samples in [-1, 1]. */
function encodeWav(samples, sampleRate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const text = (offset, value) => {
    for (let i = 0; i < value.length; i++) view.setUint8(offset + i, value.charCodeAt(i));
  };
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * 2, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Uint8Array(buffer);
}

function bytesOfBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** A WAV file of raw s16le mono PCM (the `pcm` answer format). */
function wavOfPcm16(bytes, sampleRate) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const samples = new Float32Array(Math.floor(bytes.byteLength / 2));
  for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(i * 2, true) / 0x8000;
  return encodeWav(samples, sampleRate);
}

/** Records the microphone through an AudioWorklet into a WAV file. */
class Recorder {
  constructor(onProgress) {
    this.onProgress = onProgress;
    this.chunks = [];
    this.frames = 0;
  }

  async start() {
    if (!navigator.mediaDevices?.getUserMedia || typeof AudioWorkletNode === "undefined") {
      throw new ApiError(
        "unavailable",
        "This page cannot use the microphone here: browsers allow it only on https or localhost.",
      );
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
      });
    } catch (error) {
      throw new ApiError("unavailable", `The microphone could not be opened: ${error.message}`);
    }
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule(WORKLET_URL);
    this.node = new AudioWorkletNode(this.context, "pcm-recorder");
    this.node.port.onmessage = (event) => {
      if (event.data instanceof Float32Array) {
        this.chunks.push(event.data);
        this.frames += event.data.length;
        this.onProgress(this.milliseconds());
      } else if (event.data?.flushed && this.flushed) {
        this.flushed();
      }
    };
    this.context.createMediaStreamSource(this.stream).connect(this.node);
    // The worklet writes no output (silence); reaching the destination keeps it running.
    this.node.connect(this.context.destination);
  }

  milliseconds() {
    return this.context ? (1000 * this.frames) / this.context.sampleRate : 0;
  }

  /** Stop and return {wav, milliseconds}. */
  async stop() {
    if (this.node) {
      await new Promise((resolve) => {
        this.flushed = resolve;
        this.node.port.postMessage("flush");
      });
    }
    const milliseconds = this.milliseconds();
    const sampleRate = this.context?.sampleRate;
    await this.close();
    const samples = new Float32Array(this.frames);
    let offset = 0;
    for (const chunk of this.chunks) {
      samples.set(chunk, offset);
      offset += chunk.length;
    }
    const wav = new Blob([encodeWav(samples, sampleRate || 48000)], { type: "audio/wav" });
    return { wav, milliseconds };
  }

  async close() {
    this.node?.disconnect();
    for (const track of this.stream?.getTracks() || []) track.stop();
    if (this.context && this.context.state !== "closed") await this.context.close();
    this.node = null;
    this.stream = null;
  }
}

/** Plays WAV clips one after another, in the order they were queued. */
class Player {
  constructor() {
    this.context = null;
    this.sources = new Set();
    this.nextStart = 0;
    this.decoding = Promise.resolve();
    this.generation = 0;
  }

  /** Create (or resume) the audio context: call it from a user gesture. */
  unlock() {
    if (!this.context) this.context = new AudioContext();
    if (this.context.state === "suspended") this.context.resume();
  }

  /** Queue one clip; onPlayed(seconds) is called once it has finished playing. */
  enqueue(wavBytes, onQueued, onPlayed) {
    this.unlock();
    const generation = this.generation;
    this.decoding = this.decoding
      .then(() => {
        const { buffer, byteOffset, byteLength } = wavBytes;
        return this.context.decodeAudioData(buffer.slice(byteOffset, byteOffset + byteLength));
      })
      .then((buffer) => {
        if (generation !== this.generation) return;
        const source = this.context.createBufferSource();
        source.buffer = buffer;
        source.connect(this.context.destination);
        const start = Math.max(this.context.currentTime + 0.02, this.nextStart);
        this.nextStart = start + buffer.duration;
        source.onended = () => {
          this.sources.delete(source);
          this.changed();
          if (generation === this.generation) onPlayed(buffer.duration);
        };
        this.sources.add(source);
        source.start(start);
        onQueued(buffer.duration);
        this.changed();
      })
      .catch((error) => {
        showError(new ApiError("internal", `An answer clip could not be played: ${error.message}`));
      });
  }

  stop() {
    this.generation += 1;
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.nextStart = 0;
    this.changed();
  }

  changed() {
    el.stopAudio.hidden = this.sources.size === 0;
  }
}

// --- push-to-talk ---------------------------------------------------------------------

const player = new Player();
let recorder = null;
let recordingStarted = null; // the promise of the recorder's start
let pressedAt = 0;
let ignoreRelease = false;
let lastPressInput = 0;
let recordingLimit = null;

function setTalkState(state) {
  el.talk.dataset.state = state;
  el.talk.setAttribute("aria-pressed", String(state === "recording"));
  el.talk.textContent = state === "recording" ? "Recording… let go to send" : "Talk";
}

function setVoiceStatus(text) {
  el.voiceStatus.textContent = text;
}

function startRecording() {
  giveUpWaiting();
  clearError();
  player.unlock();
  player.stop();
  recorder = new Recorder((ms) => {
    el.voiceStatus.dataset.recordedMs = String(Math.round(ms));
    setVoiceStatus(`Recording… ${(ms / 1000).toFixed(1)} s`);
  });
  el.voiceStatus.dataset.recordedMs = "0";
  setTalkState("recording");
  setBusy(true);
  setVoiceStatus("Opening the microphone…");
  recordingStarted = recorder.start().then(
    () => {
      recordingLimit = setTimeout(stopRecording, MAX_RECORDING_MS);
    },
    async (error) => {
      await recorder.close();
      recorder = null;
      setTalkState("idle");
      setVoiceStatus("");
      setBusy(false);
      showError(error);
      throw error;
    },
  );
}

async function stopRecording() {
  if (!recorder) return;
  const current = recorder;
  recorder = null;
  clearTimeout(recordingLimit);
  try {
    await recordingStarted;
  } catch {
    return; // already reported
  }
  setTalkState("sending");
  setBusy(true);
  const { wav, milliseconds } = await current.stop();
  if (milliseconds < MIN_RECORDING_MS) {
    setTalkState("idle");
    setVoiceStatus("");
    setBusy(false);
    showError(new ApiError("invalid_request", "That was too short: hold Talk while you speak."));
    return;
  }
  setVoiceStatus(`Sending ${(milliseconds / 1000).toFixed(1)} s of audio…`);
  await askSpoken(wav);
  setTalkState("idle");
}

function press() {
  lastPressInput = performance.now();
  if (recorder) {
    ignoreRelease = true;
    stopRecording();
    return;
  }
  if (busy) return;
  pressedAt = performance.now();
  startRecording();
}

function release() {
  lastPressInput = performance.now();
  if (ignoreRelease) {
    ignoreRelease = false;
    return;
  }
  // A long press is push-to-talk; a short one keeps recording until the next press.
  if (recorder && performance.now() - pressedAt >= HOLD_MS) stopRecording();
}

function setUpTalkButton() {
  const talk = el.talk;
  const isTalkKey = (event) => event.key === " " || event.key === "Enter";
  talk.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    talk.setPointerCapture(event.pointerId);
    press();
  });
  talk.addEventListener("pointerup", release);
  talk.addEventListener("pointercancel", release);
  talk.addEventListener("keydown", (event) => {
    if (!isTalkKey(event)) return;
    event.preventDefault();
    if (!event.repeat) press();
  });
  talk.addEventListener("keyup", (event) => {
    if (!isTalkKey(event)) return;
    event.preventDefault();
    release();
  });
  // Assistive technology clicks without pointer or key events: a click toggles.
  talk.addEventListener("click", (event) => {
    if (performance.now() - lastPressInput < 1000) return;
    event.preventDefault();
    press();
    ignoreRelease = false;
    pressedAt = 0;
  });
  talk.addEventListener("contextmenu", (event) => event.preventDefault());
  el.stopAudio.addEventListener("click", () => player.stop());
}

function newVoiceTurn() {
  const turn = new Turn("voice", "…");
  turn.item.dataset.audioReceived = "0";
  turn.item.dataset.audioQueued = "0";
  turn.item.dataset.audioPlayed = "0";
  turn.item.dataset.audioSeconds = "0";
  return turn;
}

async function askSpoken(wav, turn = newVoiceTurn()) {
  turn.restart();
  setBusy(true);
  const count = (name, by = 1) => {
    turn.item.dataset[name] = String(Number(turn.item.dataset[name]) + by);
  };
  try {
    const form = new FormData();
    form.append("file", wav, "question.wav");
    form.append("collection", collection());
    const response = await post(VOICE_URL, form, turn);
    let finished = false;
    for await (const { event, data } of serverEvents(response)) {
      if (event === "transcript") {
        turn.setQuestion(data.text);
        setVoiceStatus("Answering…");
      } else if (event === "text") {
        turn.append(data.text);
      } else if (event === "audio") {
        count("audioReceived");
        const bytes = bytesOfBase64(data.audio);
        const wavBytes = data.audio_format === "pcm" ? wavOfPcm16(bytes, data.sample_rate) : bytes;
        player.enqueue(
          wavBytes,
          () => count("audioQueued"),
          (seconds) => {
            count("audioPlayed");
            const order = turn.item.dataset.audioOrder;
            turn.item.dataset.audioOrder = order ? `${order},${data.index}` : String(data.index);
            turn.item.dataset.audioSeconds = (
              Number(turn.item.dataset.audioSeconds) + seconds
            ).toFixed(3);
          },
        );
      } else if (event === "done") {
        if (data.transcript) turn.setQuestion(data.transcript);
        turn.finish(data.response, data.sources);
        finished = true;
      } else if (event === "error") {
        throw apiErrorOf(data, "The spoken answer failed.");
      }
    }
    if (!finished) throw new ApiError("internal", "The answer stopped before it was complete.");
    setVoiceStatus("");
  } catch (error) {
    setVoiceStatus("");
    if (isUnauthorized(error)) {
      askForKey(error, turn, () => {
        setVoiceStatus("Sending your recording again…");
        return askSpoken(wav, turn);
      });
    } else {
      turn.fail(error);
      showError(error);
    }
  } finally {
    setBusy(false);
  }
}

// --- start ----------------------------------------------------------------------------

function setUpQuestionForm() {
  el.ask.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = el.question.value.trim();
    if (!question || busy) return;
    el.question.value = "";
    giveUpWaiting();
    askTyped(question);
  });
  el.question.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter starts a new line.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      el.ask.requestSubmit();
    }
  });
}

loadSettings();
setUpKeyPrompt();
setUpQuestionForm();
setUpTalkButton();
setTalkState("idle");
el.main.dataset.ready = "true";
