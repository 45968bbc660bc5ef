"""Chat completions on Ray Serve: a GGUF model on llama.cpp (cpu), vLLM (gpu).

``POST /llm/v1/chat/completions`` takes the OpenAI chat request and answers the OpenAI
response, or with ``stream: true`` server-sent ``chat.completion.chunk`` events ending
``data: [DONE]``; ``GET /llm/v1/models`` lists the one model. The official ``openai``
client works against ``base_url=<serve>/llm/v1``. Handle callers use
:meth:`LLMDeployment.chat` (``ChatCompletionRequest`` in, ``ChatCompletionResponse``
out) and, with a streaming handle, :meth:`LLMDeployment.chat_stream`.

The cpu profile runs a GGUF model with ``llama-cpp-python`` and the chat template inside
the GGUF: a model of :mod:`ray_inference.llm_models` by name (``model``; Qwen2.5-Coder-0.5B
by default), or any ``.gguf`` model source. llama.cpp is not thread-safe, so a replica
generates one answer at a time, in its own worker thread; streamed pieces reach the event
loop through a queue, and a caller that goes away stops the generation. Requests beyond
``max_ongoing_requests`` wait in the replica, beyond ``max_queued_requests`` they are
refused with 503 and ``Retry-After``.

Serve config::

    import_path: ray_inference.llm:build_app
    args: {model: qwen2.5-1.5b, context_tokens: 2048}

The gpu profile (``profile: gpu``) is Ray Serve LLM's OpenAI app; see
:mod:`ray_inference.llm_gpu`.
"""

# No `from __future__ import annotations`: the class is pickled by value for the replica,
# and FastAPI (through `serve.ingress`) must see the route's body model, not its name.

import asyncio
import codecs
import logging
import random
import threading
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, field_validator
from ray import serve
from ray.serve import Application

from handler_base.deployment import bind_deployment
from handler_base.errors import InternalError, PlatformError, TooLargeError
from handler_base.http import (
    configure_guard,
    platform_app,
    sse_event,
    stream_events,
)
from handler_base.inference import (
    MAX_COMPLETION_TOKENS,
    MODEL_TIME_HEADER,
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChunkChoice,
    ChunkDelta,
    ModelCard,
    ModelList,
    Usage,
    completion_id,
)
from handler_base.services import LLM
from ray_inference.llm_gpu import (
    DEFAULT_GPU_MODEL_ID,
    DEFAULT_GPU_MODEL_SOURCE,
    GPUEngineArgs,
    build_gpu_app,
)
from ray_inference.llm_models import DEFAULT_LLM_MODEL, LLM_MODELS, llm_model
from ray_inference.model_sources import resolve_model_source
from ray_inference.profiles import DeploymentResources, ProfileResources
from ray_inference.spec import ModelAppSpec, ServiceArgs

logger = logging.getLogger(__name__)

DEFAULT_CONTEXT_TOKENS = 2048
"""Context window: the models were trained on 8192 (SmolLM2) or 32768 (Qwen2.5); 2048
keeps the KV cache small and holds the chat's prompt of 5 passages (about 950 tokens)."""
DEFAULT_MAX_TOKENS = 512
"""Tokens generated when a request sets no limit."""
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful AI assistant. Answer the question concisely and accurately."
)
"""Used when a request has no system message. The GGUF template's own default ("You
are a helpful AI assistant named SmolLM...") makes the 135M model answer simple facts
wrongly at temperature 0 (it answers "capital of France" with French word salad)."""

PROMPT_BLOCK_TOKENS = 16
"""With the prompt cache, prompts are evaluated in blocks of this many tokens, and a
prompt reuses the previous one's KV cache up to the last whole block they share (so the
chat handler's fixed system-prompt head is evaluated once, not per request)."""

# Sampling defaults of llama.cpp's chat completion; OpenAI requests cannot set them.
TOP_K = 40
MIN_P = 0.05

FinishReason = Literal["stop", "length"]

api = platform_app(
    "LLM",
    "OpenAI chat completions from a local GGUF model (llama.cpp).",
    max_body_bytes=LLM.max_body_bytes,
)


# --- generation ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreparedChat:
    """A request made ready to generate: its prompt tokens and its token budget."""

    prompt_tokens: list[int]
    max_tokens: int


@dataclass(frozen=True, slots=True)
class TextPiece:
    """Text the model added to the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of an answer: why it ended and the real token counts."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    model_time_ms: float = field(default=0.0, compare=False)
    """Time in :meth:`LlamaChatModel.generate`: prompt evaluation and decoding."""

    @property
    def usage(self) -> Usage:
        """The counts as the OpenAI usage object."""
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )


GenerationEvent = TextPiece | Finished


class StopScanner:
    """Cuts generated text at the first stop sequence, holding back what might start one.

    Text that could be the beginning of a stop sequence is not released until the next
    piece shows whether it is, so a stop sequence never reaches the caller, even when
    the model writes it across several tokens.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        """Scan for ``stops`` (empty strings are ignored)."""
        self._stops = [s for s in stops if s]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add generated text.

        Returns:
            The text that is safe to release, and whether a stop sequence was found
            (then the text ends just before it and nothing more may follow).
        """
        buffer = self._held + text
        found = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if found:
            self._held = ""
            return buffer[: min(found)], True
        hold = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), hold, -1):
                if buffer.endswith(stop[:size]):
                    hold = size
                    break
        self._held = buffer[len(buffer) - hold :]
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        """The held-back text, once the answer has ended without a stop sequence."""
        held, self._held = self._held, ""
        return held


class LlamaChatModel:
    """A GGUF chat model on llama.cpp: prompt from its chat template, token by token.

    Not thread-safe: :meth:`generate` must not run twice at once (the deployment holds a
    lock). :meth:`prepare` only tokenizes and may run beside a generation.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
        threads: int = 2,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        prompt_cache: bool = True,
    ) -> None:
        """Load the model.

        Args:
            model_path: The ``.gguf`` file.
            context_tokens: Context window (prompt and answer together).
            threads: CPU threads llama.cpp computes with.
            system_prompt: System message put first when a request has none; None
                leaves that to the chat template.
            default_max_tokens: Answer length when a request sets no limit.
            prompt_cache: Reuse the previous prompt's KV cache in whole blocks of
                :data:`PROMPT_BLOCK_TOKENS` (see :meth:`generate`); False evaluates each
                repeatable request's prompt whole.

        Raises:
            ValueError: When the GGUF file has no chat template.
        """
        from llama_cpp import Llama, llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        # llama_cpp's API is only partly annotated; the model is used through Any.
        self._llm: Any = Llama(
            model_path=str(model_path),
            n_ctx=context_tokens,
            n_threads=threads,
            n_threads_batch=threads,
            # Block-sized batches: a prompt is evaluated in the same batches whether its
            # first blocks come from the cache or not, so the cache changes no logits.
            n_batch=PROMPT_BLOCK_TOKENS if prompt_cache else 512,
            verbose=False,
        )
        self.prompt_cache = prompt_cache
        self.prompt_tokens_reused = 0
        self.prompt_tokens_evaluated = 0
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{model_path} has no chat template (tokenizer.chat_template)")
        model = self._llm._model  # the only way to the token texts of bos and eos
        eos_id, bos_id = self._llm.token_eos(), self._llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
        )
        vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._end_tokens = frozenset(
            t for t in range(self._llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)
        )
        self.context_tokens: int = self._llm.n_ctx()
        self.system_prompt = system_prompt
        self.default_max_tokens = default_max_tokens
        # GGUF keys are named by architecture: llama.context_length, qwen2.context_length...
        architecture = self._llm.metadata.get("general.architecture", "llama")
        self.trained_context_tokens = int(
            self._llm.metadata.get(f"{architecture}.context_length", 0)
        )

    def prompt_text(self, request: ChatCompletionRequest) -> str:
        """The request's messages rendered by the model's chat template."""
        messages: list[Any] = [{"role": m.role, "content": m.content} for m in request.messages]
        if self.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        prompt: str = self._formatter(messages=messages).prompt
        return prompt

    def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        """Tokenize the prompt and fix the answer's token budget.

        The budget is the request's limit (or the default), cut to what the context
        leaves after the prompt.

        Raises:
            TooLargeError: When the prompt leaves no room in the context for an answer.
        """
        # The template writes the special tokens itself (ChatML has no BOS).
        tokens: list[int] = self._llm.tokenize(
            self.prompt_text(request).encode("utf-8"), add_bos=False, special=True
        )
        room = self.context_tokens - len(tokens)
        if room < 1:
            raise TooLargeError(
                f"the prompt is {len(tokens)} tokens; the model's context holds "
                f"{self.context_tokens} tokens, prompt and answer together"
            )
        wanted = request.token_limit or self.default_max_tokens
        return PreparedChat(prompt_tokens=tokens, max_tokens=min(wanted, room))

    def generate(
        self,
        prepared: PreparedChat,
        request: ChatCompletionRequest,
        cancelled: threading.Event | None = None,
    ) -> Iterator[GenerationEvent]:
        """Generate the answer, yielding its text as it grows and :class:`Finished` last.

        Args:
            prepared: What :meth:`prepare` made of ``request``.
            request: Sampling settings (``temperature``, ``top_p``, ``seed``, ``stop``).
                With a ``seed`` (or at temperature 0) the same request gives the same
                answer. With the prompt cache, the prompt's prefix shared with the
                previous request is reused from the KV cache down to a whole block (the
                batches are blocks, so the logits are those of a whole evaluation);
                without, a repeatable request's prompt is evaluated whole and other
                requests reuse any shared prefix.
            cancelled: Set from another thread to stop; the generator then ends
                without :class:`Finished`.

        Yields:
            :class:`TextPiece` items, then one :class:`Finished`.
        """
        start = time.perf_counter()
        llm = self._llm
        llm.set_seed(request.seed if request.seed is not None else random.randrange(2**31))
        if self.prompt_cache:
            shared = 0
            for cached, wanted in zip(llm._input_ids, prepared.prompt_tokens[:-1], strict=False):
                if cached != wanted:
                    break
                shared += 1
            # llm.generate reuses the first n_tokens of the KV cache and evaluates the rest.
            llm.n_tokens = shared - shared % PROMPT_BLOCK_TOKENS
        elif request.seed is not None or request.temperature == 0:
            # A prompt evaluated partly from the KV cache of the previous request in other
            # batches than whole gets slightly different logits, enough to change what is
            # sampled. A caller asking for a repeatable answer gets a fresh evaluation.
            llm.reset()
        reused = llm.n_tokens
        self.prompt_tokens_reused += reused
        self.prompt_tokens_evaluated += len(prepared.prompt_tokens) - reused
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        scanner = StopScanner(request.stop_sequences)
        finish_reason: FinishReason = "length"
        generated = 0
        hit_stop = False
        tokens = llm.generate(
            prepared.prompt_tokens,
            temp=request.temperature,
            top_p=request.top_p,
            top_k=TOP_K,
            min_p=MIN_P,
            repeat_penalty=1.0,
        )
        try:
            for token in tokens:
                if cancelled is not None and cancelled.is_set():
                    return
                if token in self._end_tokens:
                    finish_reason = "stop"
                    break
                generated += 1
                text, hit_stop = scanner.feed(decoder.decode(llm.detokenize([token])))
                if text:
                    yield TextPiece(text)
                if hit_stop:
                    finish_reason = "stop"
                    break
                if generated >= prepared.max_tokens:
                    break
        finally:
            tokens.close()
        if not hit_stop:
            rest, hit_stop = scanner.feed(decoder.decode(b"", final=True))
            rest += "" if hit_stop else scanner.flush()
            if hit_stop:
                finish_reason = "stop"
            if rest:
                yield TextPiece(rest)
        model_time_ms = (time.perf_counter() - start) * 1000
        yield Finished(finish_reason, len(prepared.prompt_tokens), generated, model_time_ms)


# --- the deployment -----------------------------------------------------------------


def sse_chunk_event(chunk: ChatCompletionChunk) -> str:
    """A chunk as its SSE event; the last one with its model time in a comment line."""
    event = sse_event(chunk)
    if chunk.model_time_ms is None:
        return event
    # A comment inside the event: SSE readers (OpenAI's included) skip it.
    return f": {MODEL_TIME_HEADER} {chunk.model_time_ms:.3f}\n{event}"


class LLMArgs(ServiceArgs):
    """Builder arguments of the LLM application (``args:`` in the Serve config).

    Attributes:
        profile: ``cpu`` (llama.cpp, this deployment) or ``gpu`` (vLLM through Ray
            Serve LLM); ``RAY_AI_PROFILE`` when absent.
        model: cpu: the model of :data:`ray_inference.llm_models.LLM_MODELS` to serve
            (``qwen2.5-0.5b``, ``qwen2.5-1.5b``, ``smollm2-135m``); ignored with
            ``model_source`` and in the gpu profile.
        model_source: cpu: a ``.gguf`` model source, instead of ``model``; gpu: a
            Hugging Face-format folder or a configured hub id (the default folder when
            None).
        model_id: The name the model is served as; when None, the chosen model's
            (:attr:`served_model_id`).
        data_dir: cpu: where split models are joined (under ``models/``);
            ``Settings().data_dir`` when None.
        context_tokens: Context window in tokens.
        threads: cpu: llama.cpp's threads.
        system_prompt: cpu: system message for requests without one (None: the
            template's own).
        default_max_tokens: cpu: answer length when a request sets none.
        prompt_cache: cpu: reuse the previous prompt's KV cache in whole blocks (the
            fixed system-prompt head of the chat handler's prompts is then not evaluated
            again); False is the old behaviour, kept to measure the difference.
        gpu_engine_kwargs: gpu: further vLLM engine arguments.
    """

    service = LLM
    profile_resources = ProfileResources(
        cpu=DeploymentResources(num_cpus=0.4, max_ongoing_requests=4, max_queued_requests=16),
        gpu=DeploymentResources(
            num_cpus=2, num_gpus=0.95, max_ongoing_requests=64, max_queued_requests=256
        ),
    )

    model: str = DEFAULT_LLM_MODEL
    model_source: str | None = None
    model_id: str | None = Field(default=None, min_length=1)
    data_dir: str | None = None
    context_tokens: int = Field(default=DEFAULT_CONTEXT_TOKENS, ge=64)
    threads: int = Field(default=2, ge=1)
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    default_max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1, le=MAX_COMPLETION_TOKENS)
    prompt_cache: bool = True
    gpu_engine_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        llm_model(name)  # refuses an unknown name, listing the known ones
        return name

    @property
    def served_model_id(self) -> str:
        """The name the model is served as: ``model_id``, else the chosen model's.

        With a ``model_source`` and no ``model_id``, the source's file or folder name.
        """
        if self.model_id is not None:
            return self.model_id
        if self.model_source is not None:
            name = self.model_source.removeprefix("pkg:").rstrip("/").rsplit("/", 1)[-1]
            return name.removesuffix(".gguf").lower() or name
        if self.profile == "gpu":
            return DEFAULT_GPU_MODEL_ID
        return LLM_MODELS[self.model].model_id

    def gguf_path(self) -> Path:
        """cpu: the ``.gguf`` file to load (joining a split model the first time).

        Raises:
            ModelSourceError: A model package is missing (named), or the joined file's
                SHA-256 is not the expected one.
        """
        if self.model_source is not None:
            return resolve_model_source(self.model_source)
        data_dir = Path(self.data_dir) if self.data_dir else None
        return llm_model(self.model).gguf_path(data_dir)

    def gpu_engine_args(self) -> GPUEngineArgs:
        """The gpu profile's engine arguments (with these arguments' queue overrides)."""
        return GPUEngineArgs(
            model_id=self.served_model_id,
            model_source=self.model_source or DEFAULT_GPU_MODEL_SOURCE,
            max_model_len=self.context_tokens,
            engine_kwargs=self.gpu_engine_kwargs,
            deployment=self.model_copy(update={"profile": "gpu"}).deployment_resources(),
        )


# `@serve.deployment` pickles the class by value when it is applied, with the module
# globals its methods use as they are then: those must be defined above the class.
_END = object()
"""Put on a generation's queue after its last event."""


@serve.deployment(name=LLM.deployment)
@serve.ingress(api)
class LLMDeployment:
    """OpenAI chat completions from a GGUF model, one generation at a time."""

    def __init__(self, args: LLMArgs) -> None:
        """Load the ``.gguf`` model ``args`` name (joining a split model the first time)."""
        configure_guard(api, args.admission())
        self.model_id = args.served_model_id
        model_path = args.gguf_path()
        self._model = LlamaChatModel(
            model_path,
            context_tokens=args.context_tokens,
            threads=args.threads,
            system_prompt=args.system_prompt,
            default_max_tokens=args.default_max_tokens,
            prompt_cache=args.prompt_cache,
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._lock = asyncio.Lock()
        self._generations = 0
        self._cancelled = 0
        logger.info(
            "LLM %s loaded from %s (context %d tokens)",
            self.model_id,
            model_path,
            args.context_tokens,
        )

    # --- HTTP -----------------------------------------------------------------------

    @api.post("/v1/chat/completions", response_model=None)
    async def create_chat_completion(
        self, body: ChatCompletionRequest
    ) -> JSONResponse | StreamingResponse:
        """The OpenAI chat completion route: the whole answer, or SSE chunks."""
        if not body.stream:
            answer = await self.chat(body)
            return JSONResponse(
                answer.model_dump(mode="json"),
                headers={MODEL_TIME_HEADER: f"{answer.model_time_ms or 0.0:.3f}"},
            )
        # The first chunk comes once generating has begun, so a prompt that is too long
        # is answered with its status rather than inside a 200 stream. An error after
        # that ends the stream with `data: {"error": ...}` and no `[DONE]`.
        return await stream_events(
            self.chat_stream(body),
            sse_chunk_event,
            failure="the model failed while generating",
            closing=[sse_event("[DONE]")],
        )

    @api.get("/v1/models")
    async def list_models(self) -> ModelList:
        """The OpenAI model list: the one model this deployment serves."""
        return await self.models()

    # --- handle methods -------------------------------------------------------------

    async def models(self) -> ModelList:
        """The served model."""
        return ModelList(data=[ModelCard(id=self.model_id)])

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """Answer a chat whole.

        Raises:
            TooLargeError: The prompt does not fit the context.
        """
        parts: list[str] = []
        finished: Finished | None = None
        async for event in self._generate(request):
            if isinstance(event, TextPiece):
                parts.append(event.text)
            else:
                finished = event
        if finished is None:  # pragma: no cover - a generation always ends with Finished
            raise InternalError("the generation ended without an end")
        choice = ChatCompletionChoice(
            message=AssistantMessage(content="".join(parts)),
            finish_reason=finished.finish_reason,
        )
        return ChatCompletionResponse(
            model=self.model_id,
            choices=[choice],
            usage=finished.usage,
            model_time_ms=finished.model_time_ms,
        )

    async def chat_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Answer a chat as OpenAI stream chunks (call with a streaming handle).

        The first chunk (the assistant role) comes with the first generated piece, so
        errors before that (a prompt too long) are raised before the stream starts. The
        last chunk has the finish reason and no content. Closing the stream stops the generation.

        Raises:
            TooLargeError: The prompt does not fit the context (before any chunk).
        """
        chunk_id = completion_id()
        created = int(time.time())

        def chunk(
            delta: ChunkDelta, finish_reason: FinishReason | None = None
        ) -> ChatCompletionChunk:
            choice = ChunkChoice(delta=delta, finish_reason=finish_reason)
            return ChatCompletionChunk(
                id=chunk_id, created=created, model=self.model_id, choices=[choice]
            )

        events = self._generate(request)
        try:
            first = await anext(events)
            yield chunk(ChunkDelta(role="assistant", content=""))
            event: GenerationEvent | None = first
            while event is not None:
                if isinstance(event, TextPiece):
                    yield chunk(ChunkDelta(content=event.text))
                else:
                    last = chunk(ChunkDelta(), event.finish_reason)
                    yield last.model_copy(update={"model_time_ms": event.model_time_ms})
                event = await anext(events, None)
        finally:
            await events.aclose()

    async def status(self) -> dict[str, Any]:
        """What the replica is doing: generations started and cancelled, busy or not.

        With the prompt tokens taken from the KV cache (reused) or evaluated, summed.
        """
        return {
            "model_id": self.model_id,
            "context_tokens": self._model.context_tokens,
            "generations": self._generations,
            "cancelled": self._cancelled,
            "busy": self._lock.locked(),
            "prompt_cache": self._model.prompt_cache,
            "prompt_tokens_reused": self._model.prompt_tokens_reused,
            "prompt_tokens_evaluated": self._model.prompt_tokens_evaluated,
        }

    # --- the worker thread ----------------------------------------------------------

    async def _generate(
        self, request: ChatCompletionRequest
    ) -> AsyncGenerator[GenerationEvent, None]:
        """Run one generation in the worker thread and yield its events.

        The prompt is checked before waiting for the model, so a bad request is refused
        at once even while another answer is being generated. The lock is released when
        the worker thread is done, not when the caller leaves: an abandoned generation is
        told to stop and the next one waits until it has.
        """
        prepared = await asyncio.to_thread(self._model.prepare, request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed: the replica is stopping
                cancelled.set()

        def work() -> None:
            try:
                for event in self._model.generate(prepared, request, cancelled):
                    put(event)
            except BaseException as exc:  # handed to the caller, not lost in the thread
                put(exc)
            finally:
                put(_END)

        await self._lock.acquire()
        try:
            future = loop.run_in_executor(self._executor, work)
        except BaseException:
            self._lock.release()
            raise
        future.add_done_callback(lambda _: self._lock.release())
        self._generations += 1
        finished = False
        pending: Any = None
        try:
            while True:
                item = pending if pending is not None else await queue.get()
                pending = None
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    if isinstance(item, PlatformError):
                        raise item
                    logger.error("generation failed", exc_info=item)
                    raise InternalError("the model failed while generating") from item
                if isinstance(item, TextPiece):
                    # Pieces that came while the caller was busy go out as one: under
                    # load, fewer and larger chunks rather than a growing backlog.
                    texts = [item.text]
                    while not queue.empty():
                        pending = queue.get_nowait()
                        if not isinstance(pending, TextPiece):
                            break
                        texts.append(pending.text)
                        pending = None
                    item = TextPiece("".join(texts)) if len(texts) > 1 else item
                yield item
        finally:
            if not finished:
                cancelled.set()
                self._cancelled += 1
                logger.info("a caller left; its generation is stopped")


# --- the application ----------------------------------------------------------------


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The LLM application (``import_path: ray_inference.llm:build_app``).

    Raises:
        ImportError: For the gpu profile where vLLM is not installed (render its config
            with :func:`ray_inference.llm_gpu.gpu_application_config` instead).
    """
    a = LLMArgs.model_validate(args or {})
    if a.profile == "gpu":
        gpu_app: Application = build_gpu_app(a.gpu_engine_args())
        return gpu_app
    return bind_deployment(LLMDeployment, a)


SPEC = ModelAppSpec(LLMArgs, build_app)
"""The LLM application: ``/llm``, :class:`LLMArgs`, :func:`build_app` (in the gpu profile
Ray Serve LLM's, see :meth:`LLMArgs.gpu_engine_args`)."""


def __getattr__(name: str) -> Any:
    """``app``: built on first use, so that importing this module never needs vLLM.

    ``ray_inference.llm:app`` is the cpu application, or under ``RAY_AI_PROFILE=gpu``
    the Ray Serve LLM one (which needs vLLM where it is built).
    """
    if name == "app":
        application = build_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
