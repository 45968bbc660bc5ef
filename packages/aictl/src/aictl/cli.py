"""``aictl``: run the platform on one machine, talk to it, render it for a cluster."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import PackageNotFoundError
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aictl.apps import StackOptions
from aictl.evaluation import RetrievalScores
from aictl.local import (
    SAMPLE_COLLECTION,
    LocalStack,
    StackState,
    describe_nats_failure,
    nats_problem,
    read_state,
    redact_urls,
    sample_documents,
    stack_nats_settings,
    stop_running_stack,
)
from aictl.reconfigure import SettingError, check_arguments, parse_setting, with_settings
from aictl.render import ClusterOptions, PackageIndex, cluster_serve_config, render, to_yaml
from aictl.serve_api import (
    ApplicationState,
    ServeApi,
    deploy_and_wait,
    redeploy_and_wait,
    replica_actors,
    summarize,
)
from handler_base.errors import ErrorCode, PlatformError, RequestTimeoutError, validate_as
from handler_base.messages import (
    ChatRequest,
    ChatResponse,
    PipelineRunAccepted,
    PipelineRunStatus,
    PipelineStatusEvent,
    PipelineTrigger,
    Source,
    VoiceRequest,
    VoiceResponse,
)
from handler_base.settings import Settings
from ray_inference.llm_models import DEFAULT_LLM_MODEL, LLM_MODELS, LLMModel, llm_model
from ray_inference.model_sources import ModelSourceError

app = typer.Typer(
    name="aictl",
    help="Chat and voice assistants over your own knowledge, on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

EXAMPLE_QUESTION = "How long does the Aurora X7 drone fly on one charge?"


class Via(StrEnum):
    """How a request reaches the platform."""

    http = "http"
    nats = "nats"


class IngestVia(StrEnum):
    """How documents reach the knowledge base."""

    http = "http"
    pipeline = "pipeline"


class ProfileName(StrEnum):
    """The deployment profiles."""

    cpu = "cpu"
    gpu = "gpu"


class LayoutName(StrEnum):
    """Where the replicas go."""

    one_node = "one-node"
    cluster = "cluster"


class FormatName(StrEnum):
    """What ``aictl render`` writes."""

    serve = "serve"
    rayservice = "rayservice"


def step(line: str) -> None:
    """Say what a command is doing now."""
    console.print(f"[bold]==>[/] {line}", soft_wrap=True)


def fail(message: str) -> typer.Exit:
    """Print ``message`` as an error; the caller raises what this returns."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(1)


def explain(exc: PlatformError, settings: Settings) -> str:
    """What to tell the user about ``exc``: what to set for a refused key or NATS login."""
    if exc.code is ErrorCode.UNAUTHORIZED:
        if settings.service_api_key is None:
            return "the platform needs an API key: set SERVICE_API_KEY"
        return "the API key was refused: SERVICE_API_KEY must be one of the platform's API_KEYS"
    return describe_nats_failure(settings, exc)


def without_userinfo(text: str) -> str:
    """``text`` with the user part of every URL in it removed (``nats://u:p@h`` -> ``nats://h``)."""
    return re.sub(r"(?<=://)[^/@\s]*@", "", text)


def serve_url(settings: Settings) -> str:
    """The Serve proxy of the running local stack, else the one the settings name."""
    state = read_state(settings)
    if state is not None:
        return state.serve_url
    return settings.service_url("chat").rsplit("/chat", 1)[0]


# --- up / down ---------------------------------------------------------------------------


def _apps_table(states: list[ApplicationState]) -> Table:
    table = Table(title=f"Applications: {summarize(states) or 'starting'}", title_justify="left")
    table.add_column("app")
    table.add_column("route")
    table.add_column("status")
    table.add_column("replicas")
    colours = {"RUNNING": "green", "DEPLOYING": "yellow"}
    for state in states:
        replicas = "; ".join(d.describe_replicas() for d in state.deployments) or "-"
        colour = colours.get(state.status, "red")
        table.add_row(
            state.name, state.route_prefix or "-", f"[{colour}]{state.status}[/]", replicas
        )
    return table


def _deploy_with_progress(stack: LocalStack) -> None:
    """Deploy, showing the applications' states: a live table, or a line per change."""
    if console.is_terminal:
        with Live(_apps_table([]), console=console, refresh_per_second=2) as live:
            stack.deploy(lambda states: live.update(_apps_table(states)))
        return
    stack.deploy(print_changes(stack.say))


def print_changes(say: Callable[[str], None]) -> Callable[[list[ApplicationState]], None]:
    """A receiver of the applications' states that says a line each time they change."""
    last = ""

    def receive(states: list[ApplicationState]) -> None:
        nonlocal last
        line = ", ".join(f"{s.name} {s.status.lower()}" for s in states)
        if line != last:
            say(f"Applications: {line}")
            last = line

    return receive


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def say_access_control(stack: LocalStack) -> None:
    """Say whether the HTTP routes need an API key (never which)."""
    keys = len(stack.settings.accepted_api_keys())
    if not keys:
        return
    stack.say(
        f"Access control is on: HTTP requests need one of the {keys} keys in API_KEYS "
        "(Authorization: Bearer KEY); /-/healthz and the web page's files are open"
    )
    if not stack.service_api_key_accepted():
        state = "is not set" if stack.settings.service_api_key is None else "is not one of them"
        stack.say(
            f"[yellow]SERVICE_API_KEY {state}[/]: aictl and the examples below send it; "
            "export one of the keys as SERVICE_API_KEY in the shell you use them in"
        )


def print_examples(stack: LocalStack) -> None:
    """The URLs and three examples that work as pasted.

    With access control on they work with ``SERVICE_API_KEY`` exported: they read the key
    from the environment, and never print it.
    """
    base = stack.serve_url
    python = sys.executable
    aictl = Path(sys.argv[0]).resolve()
    body = f'{{"query": "{EXAMPLE_QUESTION}"}}'
    keyed = stack.access_control
    auth_header = ' -H "Authorization: Bearer $SERVICE_API_KEY"' if keyed else ""
    api_key = "os.environ['SERVICE_API_KEY']" if keyed else "'none'"
    openai_code = (
        ("import os; " if keyed else "") + "from openai import OpenAI; "
        f"c = OpenAI(base_url='{base}/chat/v1', api_key={api_key}); "
        "r = c.chat.completions.create(model='rag', messages=[{'role': 'user', "
        f"'content': '{EXAMPLE_QUESTION}'}}]); print(r.choices[0].message.content)"
    )
    console.print()
    console.print("[bold green]The platform is up.[/]")
    page_note = " (it asks for the API key)" if keyed else ""
    console.print(f"  Web page:        [link={base}/]{base}/[/link]{page_note}")
    console.print(f"  Ray dashboard:   {stack.dashboard_url}")
    console.print(f"  NATS:            {stack.nats_url_shown}")
    console.print()
    pasted = "with SERVICE_API_KEY exported, " if keyed else ""
    console.print(f"[bold]Try it[/] ({pasted}each line works as pasted):")
    console.print("  # HTTP, the answer with its sources")
    console.print(
        f"  curl -s {base}/chat -H 'content-type: application/json'{auth_header} -d '{body}'",
        soft_wrap=True,
    )
    console.print("  # the OpenAI client, against the RAG chat")
    console.print(f'  {python} -c "{openai_code}"', soft_wrap=True)
    console.print("  # over NATS (ai.chat.request, through the bridge)")
    console.print(f'  {aictl} chat --via nats "{EXAMPLE_QUESTION}"', soft_wrap=True)
    console.print()
    console.print("Press Ctrl-C to stop everything (or run `aictl down` in another shell).")


def chosen_llm(name: str | None) -> LLMModel:
    """The cpu LLM ``--llm`` names (the default when None); an unknown name ends the command.

    Raises:
        typer.Exit: The catalog has no such model (the known ones are listed).
    """
    try:
        return llm_model(name or DEFAULT_LLM_MODEL)
    except ValueError as exc:
        raise fail(f"--llm: {exc}") from None


LLMOption = Annotated[
    str | None,
    typer.Option(
        "--llm",
        help=f"The cpu profile's LLM: {', '.join(LLM_MODELS)} (default {DEFAULT_LLM_MODEL}; "
        "see ray-inference's README for which to pick).",
        show_default=False,
    ),
]


@app.command()
def up(
    serve_port: Annotated[int, typer.Option(help="Port of the Serve proxy (HTTP).")] = 8000,
    dashboard_port: Annotated[int, typer.Option(help="Port of the Ray dashboard.")] = 8265,
    bridge: Annotated[
        bool, typer.Option(help="Serve NATS (the bridge and pipeline service app).")
    ] = True,
    sample: Annotated[
        bool, typer.Option(help="Ingest the sample documents on the first run.")
    ] = True,
    llm: LLMOption = None,
) -> None:
    """Start the whole platform on this machine: NATS, Ray, the models, chat, voice, the web page.

    Runs until Ctrl-C (or `aictl down`), then stops all it started.
    """
    model = chosen_llm(llm)
    settings = Settings()
    stack = LocalStack(
        settings,
        serve_port=serve_port,
        dashboard_port=dashboard_port,
        bridge=bridge,
        llm=model.name,
        say=lambda line: console.print(f"[bold]==>[/] {line}", soft_wrap=True),
    )
    try:
        stack.check_free()
        # Its packages, checked before anything starts (the replica would fail later).
        model.package_paths()
    except (RuntimeError, ModelSourceError) as exc:
        raise fail(str(exc)) from None
    stack.say(f"LLM: {model.title} ({model.name}; choose another with --llm)")
    say_access_control(stack)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # Also when started in the background by a shell, which leaves SIGINT ignored.
    signal.signal(signal.SIGINT, _raise_interrupt)
    started = time.monotonic()
    try:
        stack.start_nats()
        stack.start_ray()
        # Ray's own SIGTERM handler (installed by ray.init) ends the process at once;
        # ours stops everything first.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        stack.write_state()
        _deploy_with_progress(stack)
        if sample:
            chunks = stack.ingest_sample()
            if chunks is not None:
                stack.say(
                    f"Sample knowledge base ingested: {chunks} chunks in '{SAMPLE_COLLECTION}'"
                )
        stack.say(f"Ready in {time.monotonic() - started:.0f} s")
        print_examples(stack)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        console.print()
        stack.say("Stopping (Ctrl-C or aictl down)")
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    except PlatformError as exc:
        raise fail(explain(exc, stack.settings)) from None
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        stack.stop()
    console.print("[bold]Stopped.[/] Everything aictl up started has ended.")


@app.command()
def down() -> None:
    """Stop the platform that `aictl up` runs (from another shell)."""
    if not stop_running_stack(Settings(), say=lambda line: console.print(f"[bold]==>[/] {line}")):
        console.print("Nothing to stop: no `aictl up` is running.")
        return
    console.print("[bold]Stopped.[/]")


# --- status ------------------------------------------------------------------------------


@app.command()
def status() -> None:
    """Show the applications and their replicas, NATS, and the knowledge base's collections.

    Nothing secret is shown: URLs lose their user part, keys and passwords are never read
    out, and a refused key or login is said in words.
    """
    settings = Settings()
    state = read_state(settings)
    if state is None:
        console.print("No local stack is running (start one with `aictl up`).")
    else:
        console.print(f"Local stack: aictl up, pid {state.pid}, up {_since(state)}")
        api = ServeApi(state.dashboard_url, timeout_s=10)
        try:
            console.print(_apps_table(api.applications()))
        except Exception as exc:
            console.print(
                f"[red]Serve does not answer at {state.dashboard_url}: "
                f"{escape(without_userinfo(str(exc)))}[/]"
            )
        finally:
            api.close()
    nats_settings = stack_nats_settings(settings, state)
    problem = nats_problem(nats_settings, wait_s=3)
    answer = (
        "[green]connected[/]" if problem is None else f"[red]{escape(without_userinfo(problem))}[/]"
    )
    console.print(f"NATS at {redact_urls(nats_settings.nats_url)}: {answer}", soft_wrap=True)
    base = serve_url(settings)
    try:
        collections = asyncio.run(_collections(settings, base))
    except PlatformError as exc:
        console.print(
            f"Knowledge base at {without_userinfo(base)}/chat: "
            f"[red]{escape(without_userinfo(explain(exc, settings)))}[/]",
            soft_wrap=True,
        )
        return
    table = Table(title="Knowledge base collections", title_justify="left")
    table.add_column("collection")
    table.add_column("chunks", justify="right")
    for name, count in collections:
        table.add_row(name, str(count))
    console.print(table)


def _since(state: StackState) -> str:
    seconds = int(time.time() - state.started_at)
    return (
        f"{seconds // 3600} h {seconds % 3600 // 60} min"
        if seconds >= 3600
        else f"{seconds // 60} min"
    )


async def _collections(settings: Settings, base: str) -> list[tuple[str, int]]:
    from handler_base.clients import KnowledgeClient

    async with KnowledgeClient(settings, mode="http", base_url=f"{base}/chat") as client:
        answer = await client.collections()
    return [(c.name, c.count) for c in answer.collections]


# --- ingest ------------------------------------------------------------------------------


def supported_files(paths: Sequence[Path]) -> Iterator[Path]:
    """The files under ``paths`` that the knowledge base reads, in a stable order."""
    from handler_base.rag.documents import SUPPORTED_SUFFIXES

    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in SUPPORTED_SUFFIXES:
                    yield file
        else:
            yield path


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (.txt .md .html .pdf).")],
    collection: Annotated[str, typer.Option(help="The collection to add them to.")] = "default",
    batch: Annotated[int, typer.Option(min=1, max=64, help="Documents per request.")] = 8,
    via: Annotated[
        IngestVia,
        typer.Option(
            help="http: read the files here and send them to the knowledge API; pipeline: "
            "copy them into the stack's inbox (DATA_DIR/inbox) and run the document-ingestion "
            "pipeline over NATS, which reads them there."
        ),
    ] = IngestVia.http,
) -> None:
    """Add documents to the knowledge base (the same file again adds nothing)."""
    settings = Settings()
    files = list(supported_files(paths))
    missing = [f for f in files if not f.exists()]
    if missing:
        raise fail(f"no such file: {', '.join(map(str, missing))}")
    if not files:
        raise fail("no .txt, .md, .html or .pdf files found there")
    if via is IngestVia.pipeline:
        try:
            status = asyncio.run(_ingest_by_pipeline(settings, files, collection))
        except PlatformError as exc:
            raise fail(explain(exc, settings)) from None
        if status.state != "succeeded":
            raise fail(f"pipeline run {status.run_id} failed: {status.error}")
        console.print(
            f"[bold green]Ingested[/] {len(files)} files into '{collection}' "
            f"(pipeline run {status.run_id})."
        )
        return
    try:
        written, skipped = asyncio.run(
            _ingest(settings, serve_url(settings), files, collection, batch)
        )
    except PlatformError as exc:
        raise fail(explain(exc, settings)) from None
    console.print(
        f"[bold green]Ingested[/] {len(files) - len(skipped)} of {len(files)} files "
        f"into '{collection}': {written} chunks."
    )
    for file, why in skipped:
        console.print(f"  [yellow]skipped[/] {file}: {why}")
    if skipped:
        raise typer.Exit(1)


async def _ingest(
    settings: Settings, base: str, files: list[Path], collection: str, batch: int
) -> tuple[int, list[tuple[Path, str]]]:
    from handler_base.clients import KnowledgeClient
    from handler_base.rag.documents import load_document

    written = 0
    skipped: list[tuple[Path, str]] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    async with KnowledgeClient(settings, mode="http", base_url=f"{base}/chat") as client:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("Ingesting", total=len(files))
            for start in range(0, len(files), batch):
                documents = []
                for file in files[start : start + batch]:
                    try:
                        document = load_document(file)
                    except (PlatformError, OSError) as exc:
                        skipped.append((file, str(exc)))
                        continue
                    documents.append(
                        {"id": document.id, "text": document.text, "metadata": document.metadata}
                    )
                if documents:
                    answer = await client.ingest({"collection": collection, "documents": documents})
                    written += answer.chunks
                progress.update(task, advance=len(files[start : start + batch]))
    return written, skipped


def copy_into_inbox(settings: Settings, file: Path) -> Path:
    """``file`` copied to the same path under the inbox, the only folder pipelines read.

    The same file lands in the same place each time, so its document id stays the same.
    """
    source = file.resolve()
    target = settings.inbox_dir / source.relative_to(source.anchor)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


async def _ingest_by_pipeline(
    settings: Settings, files: list[Path], collection: str
) -> PipelineRunStatus:
    """Trigger document-ingestion over NATS and follow its status events to the end."""
    from handler_base.messaging import connect, flush, request
    from pipeline_bridge.pipelines.service import PipelineServiceConfig

    subjects = PipelineServiceConfig()
    settings = stack_nats_settings(settings, read_state(settings))
    inboxed = [copy_into_inbox(settings, file) for file in files]
    console.print(f"Copied {len(files)} files into the inbox ({settings.inbox_dir})")
    trigger = PipelineTrigger(
        pipeline="document-ingestion",
        params={"collection": collection, "paths": [str(f) for f in inboxed]},
    )
    nc = await connect(settings, connect_wait_s=5)
    events: asyncio.Queue[PipelineStatusEvent] = asyncio.Queue()

    async def on_event(msg: Any) -> None:
        events.put_nowait(PipelineStatusEvent.model_validate_json(msg.data))

    try:
        # Subscribed before the trigger: the first event follows the reply at once.
        await nc.subscribe(f"{subjects.status_subject_prefix}.>", cb=on_event)
        await flush(nc)
        accepted = await request(nc, subjects.subject, trigger, PipelineRunAccepted)
        with console.status(f"Pipeline run {accepted.run_id}: {accepted.state}") as shown:
            while True:
                event = await asyncio.wait_for(events.get(), timeout=1800)
                if event.data.run_id != accepted.run_id:
                    continue
                shown.update(f"Pipeline run {accepted.run_id}: {event.data.state}")
                if event.data.state.is_final:
                    return event.data
    finally:
        await nc.close()


# --- chat / voice ------------------------------------------------------------------------


def print_sources(sources: Sequence[Source]) -> None:
    """The sources of an answer, numbered as the answer cites them."""
    if not sources:
        return
    console.print("[bold]Sources[/]")
    for number, source in enumerate(sources, 1):
        title = source.metadata.get("title") or source.metadata.get("path") or source.id
        console.print(f"  [{number}] {title} (score {source.score:.2f})")


@app.command()
def chat(
    question: Annotated[str, typer.Argument(help="What to ask.")],
    via: Annotated[Via, typer.Option(help="Ask over HTTP or over NATS.")] = Via.http,
    stream: Annotated[bool, typer.Option(help="Print the answer as it is written (HTTP).")] = False,
    collection: Annotated[str, typer.Option(help="The knowledge base collection.")] = "default",
) -> None:
    """Ask a question; the answer comes from the knowledge base, with its sources."""
    settings = Settings()
    try:
        request = validate_as(ChatRequest, {"query": question, "collection": collection})
        if via is Via.nats:
            if stream:
                raise fail("--stream works over HTTP only (NATS replies are whole answers)")
            answer = asyncio.run(
                _nats_request(settings, settings.nats_chat_subject, request, ChatResponse)
            )
            console.print(answer.response)
        elif stream:
            answer = asyncio.run(_chat_stream(settings, request))
        else:
            answer = asyncio.run(_chat(settings, request))
            console.print(answer.response)
    except PlatformError as exc:
        raise fail(explain(exc, settings)) from None
    print_sources(answer.sources)


async def _chat(settings: Settings, request: ChatRequest) -> ChatResponse:
    from handler_base.clients import ChatClient

    async with ChatClient(settings, mode="http", base_url=f"{serve_url(settings)}/chat") as client:
        return await client.chat(request)


async def _chat_stream(settings: Settings, request: ChatRequest) -> ChatResponse:
    from handler_base.clients import ChatClient

    async with ChatClient(settings, mode="http", base_url=f"{serve_url(settings)}/chat") as client:
        pieces: AsyncIterator[str | ChatResponse] = client.chat_stream(request)
        async for item in pieces:
            if isinstance(item, ChatResponse):
                console.print()
                return item
            console.print(item, end="", soft_wrap=True)
    raise PlatformError("the answer ended without its sources")


async def _nats_request(
    settings: Settings, subject: str, payload: Any, reply_type: type[Any]
) -> Any:
    from handler_base.messaging import connect, request

    settings = stack_nats_settings(settings, read_state(settings))
    nc = await connect(settings, connect_wait_s=5)
    try:
        return await request(nc, subject, payload, reply_type, timeout=300)
    finally:
        await nc.close()


@app.command()
def voice(
    audio: Annotated[
        Path, typer.Argument(help="A spoken question (WAV, or any format Whisper reads).")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the spoken answer (WAV).")
    ] = Path("answer.wav"),
    via: Annotated[Via, typer.Option(help="Ask over HTTP or over NATS.")] = Via.http,
    collection: Annotated[str, typer.Option(help="The knowledge base collection.")] = "default",
) -> None:
    """Ask a spoken question; write the spoken answer and print what was heard and said."""
    settings = Settings()
    if not audio.is_file():
        raise fail(f"no such file: {audio}")
    try:
        request = validate_as(VoiceRequest, {"audio": audio.read_bytes(), "collection": collection})
        if via is Via.nats:
            answer = asyncio.run(
                _nats_request(settings, settings.nats_voice_subject, request, VoiceResponse)
            )
        else:
            answer = asyncio.run(_voice(settings, request))
    except PlatformError as exc:
        raise fail(explain(exc, settings)) from None
    output.write_bytes(answer.audio)
    console.print(f"[bold]Heard:[/] {answer.transcript}")
    console.print(f"[bold]Answer:[/] {answer.response}")
    print_sources(answer.sources)
    console.print(f"Spoken answer written to {output}")


async def _voice(settings: Settings, request: VoiceRequest) -> VoiceResponse:
    from handler_base.clients import VoiceClient

    async with VoiceClient(
        settings, mode="http", base_url=f"{serve_url(settings)}/voice"
    ) as client:
        return await client.voice(request)


# --- eval --------------------------------------------------------------------------------


@dataclass
class EvalRow:
    """One line of the `aictl eval` table."""

    what: str
    scores: RetrievalScores
    answered: int | None = None
    """Answers that state their fact (None: the row asked no questions of the LLM)."""


@app.command(name="eval")
def eval_command(
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Ask only the first N questions of each set (a quick check)."),
    ] = None,
    answers: Annotated[
        bool,
        typer.Option(
            help="Also ask the sample questions and the answer set through /chat and check "
            "the answers (the LLM writes each one: seconds each on a CPU)."
        ),
    ] = True,
    candidates: Annotated[
        int, typer.Option(min=10, max=100, help="Passages each search returns (top_k).")
    ] = 50,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            dir_okay=False,
            help="Write the answer set's figures and per-question results to this JSON file.",
        ),
    ] = None,
) -> None:
    """Measure retrieval and answer quality on the running platform and print the tables.

    Adds the Python language reference (shipped with Python) to its own collection,
    eval_python_reference, the first time; searches it with two labelled sets (and the
    answer set and the sample with theirs), each question in the vector search's order and
    as the chat's pipeline ranks it, the pipeline against dense alone with a paired 95%
    interval (aictl.evaluation.run_retrieval); then asks the sample knowledge base's
    questions (collection default) and checks each answer for its fact. nDCG@10 and
    recall@10 are per document (a document ranks at its best passage). Then the answer set
    (collection eval_answers, added or refreshed when its documents changed): fact
    questions, follow-ups with their conversation and questions the documents cannot
    answer, each through /chat, judged for facts, refusals, citations and loops, with the
    answer times.
    """
    if output is not None and not answers:
        raise fail("--output writes the answer set's results, which --no-answers skips")
    settings = Settings()
    base = serve_url(settings)
    try:
        rows = asyncio.run(_evaluate(settings, base, limit, answers, candidates))
    except PlatformError as exc:
        if exc.code is ErrorCode.UNAVAILABLE:
            raise fail(
                f"the platform at {without_userinfo(base)} does not answer: is it running? "
                f"(start it with `aictl up`, or set CHAT_URL to it) [{exc.message}]"
            ) from None
        raise fail(explain(exc, settings)) from None
    table = Table(title="Quality", title_justify="left")
    for column in ("set", "nDCG@10", "recall@10", "answer rate", "n"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for row in rows:
        rate = "-" if row.answered is None else f"{row.answered / row.scores.n:.0%}"
        table.add_row(
            row.what, f"{row.scores.ndcg:.3f}", f"{row.scores.recall:.3f}", rate, str(row.scores.n)
        )
    if rows:
        console.print(table)
    if answers:
        _evaluate_answers(settings, base, limit, output)


def _evaluate_answers(
    settings: Settings, base: str, limit: int | None, output: Path | None
) -> None:
    """Run the answer set (aictl.evaluation.run_answers), print its table, write ``output``."""
    from aictl.evaluation.run_answers import answers_table, evaluate_answers, write_report

    try:
        report = asyncio.run(evaluate_answers(settings, base, console, limit))
    except PlatformError as exc:
        if exc.code is ErrorCode.UNAVAILABLE:
            raise fail(
                f"the platform at {without_userinfo(base)} stopped answering [{exc.message}]"
            ) from None
        raise fail(explain(exc, settings)) from None
    summary = report.summary_figures()
    console.print(answers_table(summary, f"Answers: the answer set ({report.documents} documents)"))
    if output is not None:
        try:
            write_report(report, output)
        except OSError as exc:
            raise fail(f"cannot write {output}: {exc.strerror or exc}") from None
        console.print(f"Per-question results written to {output}")


async def _evaluate(
    settings: Settings, base: str, limit: int | None, answers: bool, candidates: int
) -> list[EvalRow]:
    from aictl.evaluation import EVAL_SET, answer_contains, document_ranking, score_rankings
    from aictl.evaluation.run_retrieval import evaluate_retrieval, retrieval_table
    from handler_base.clients import ChatClient, KnowledgeClient

    sample = EVAL_SET[:limit]
    rows: list[EvalRow] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    async with KnowledgeClient(settings, mode="http", base_url=f"{base}/chat") as knowledge:
        present = {c.name: c.count for c in (await knowledge.collections()).collections}
        if SAMPLE_COLLECTION not in present:
            step(f"Adding the sample knowledge base to '{SAMPLE_COLLECTION}'")
            await knowledge.ingest(
                {"collection": SAMPLE_COLLECTION, "documents": sample_documents()}
            )
        # The retrieval sets: dense alone and the chat's pipeline, with a paired interval.
        retrieval = await evaluate_retrieval(
            knowledge,
            console,
            limit=limit,
            candidates=candidates,
            sample_collection=SAMPLE_COLLECTION,
        )
    console.print(retrieval_table(retrieval, candidates))
    if not answers:
        return rows
    rankings: list[list[str]] = []
    answered = 0
    # An answer takes seconds on a CPU, and longer while other work shares the cores.
    patient = settings.model_copy(update={"http_timeout_s": max(settings.http_timeout_s, 600.0)})
    async with ChatClient(patient, mode="http", base_url=f"{base}/chat") as chat:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(
                "Asking the sample questions (the LLM writes each answer)", total=len(sample)
            )
            for case in sample:
                try:
                    answer = await chat.chat(
                        ChatRequest(query=case.question, collection=SAMPLE_COLLECTION)
                    )
                except RequestTimeoutError as exc:
                    # One slow answer (a busy CPU) should not lose the whole run.
                    console.print(f"[yellow]No answer in time, counted as wrong:[/] {exc.message}")
                    rankings.append([])
                else:
                    rankings.append(document_ranking(answer.sources))
                    answered += answer_contains(answer.response, case.facts)
                progress.update(task, advance=1)
    scores = score_rankings(rankings, [c.relevance for c in sample])
    rows.append(EvalRow("sample, chat answers (sources)", scores, answered))
    return rows


# --- render ------------------------------------------------------------------------------


ProfileOption = Annotated[
    ProfileName, typer.Option(help="cpu: the packaged CPU models; gpu: a GPU cluster.")
]
LayoutOption = Annotated[
    LayoutName | None,
    typer.Option(
        help="one-node: everything on one Ray node; cluster: handlers on the head (resource "
        "'head'), models on the workers (resource 'worker'). Default: one-node for cpu, "
        "cluster for gpu."
    ),
]
IndexOption = Annotated[
    str | None,
    typer.Option(
        help="The private package index (simple API) the cluster installs our packages and "
        "their dependencies from."
    ),
]
VersionOption = Annotated[
    str | None, typer.Option(help="The package version to install (default: this one).")
]
NatsOption = Annotated[str | None, typer.Option(help="NATS as the cluster's nodes reach it.")]
MilvusOption = Annotated[
    str | None,
    typer.Option(
        help="The Milvus server the chat handler uses; 'lite' for Milvus Lite in the head "
        "node's data folder."
    ),
]
OtlpOption = Annotated[
    str | None,
    typer.Option(help="The OpenTelemetry collector (OTLP gRPC); 'off' exports no traces."),
]
OFF_VALUES = ("lite", "off")


def cluster_options(
    index_url: str | None,
    version: str | None,
    nats_url: str | None,
    milvus_host: str | None,
    otlp_endpoint: str | None = None,
    **fields: Any,
) -> ClusterOptions:
    """The RayService and cluster settings from the command line's options."""
    cluster = ClusterOptions(**fields)
    update: dict[str, Any] = {}
    if index_url or version:
        update["index"] = PackageIndex(url=index_url or cluster.index.url, version=version)
    if nats_url:
        update["nats_url"] = nats_url
    for name, value in (("milvus_host", milvus_host), ("otlp_endpoint", otlp_endpoint)):
        if value:
            update[name] = None if value in OFF_VALUES else value
    return cluster.model_copy(update=update)


@app.command(name="render")
def render_command(
    profile: ProfileOption = ProfileName.cpu,
    layout: LayoutOption = None,
    fmt: Annotated[
        FormatName, typer.Option("--format", help="A Serve config, or a KubeRay RayService.")
    ] = FormatName.serve,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    index_url: IndexOption = None,
    version: VersionOption = None,
    nats_url: NatsOption = None,
    milvus_host: MilvusOption = None,
    otlp_endpoint: OtlpOption = None,
    name: Annotated[str, typer.Option(help="The RayService's name.")] = "ai-inference",
    namespace: Annotated[str, typer.Option(help="The RayService's namespace.")] = "ai-ml",
    llm: LLMOption = None,
) -> None:
    """Print the Serve config (`serve deploy`) or the RayService of a profile, validated."""
    if llm is not None and profile is ProfileName.gpu:
        raise fail(
            "--llm chooses the cpu profile's GGUF model; the gpu profile serves a Hugging "
            "Face-format model folder with vLLM (ray_inference.llm_gpu)"
        )
    model = chosen_llm(llm)
    cluster = cluster_options(
        index_url, version, nats_url, milvus_host, otlp_endpoint, name=name, namespace=namespace
    )
    stack = StackOptions(
        profile=profile.value,
        layout=layout.value if layout else None,
        llm=model.name,
    )
    document = render(fmt.value, stack, cluster)
    text = to_yaml(document)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        err.print(f"Wrote {output}")


@contextlib.contextmanager
def dashboard_api(address: str) -> Iterator[ServeApi]:
    """Serve's REST API at ``address``; what goes wrong there ends the command, said plainly."""
    api = ServeApi(address)
    try:
        yield api
    except (RuntimeError, SettingError) as exc:
        raise fail(str(exc)) from None
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the Ray dashboard at {address}: {exc}") from None
    finally:
        api.close()


@app.command(name="deploy")
def deploy_command(
    address: Annotated[
        str, typer.Option(help="The Ray dashboard of the cluster (Serve's REST API).")
    ] = "http://127.0.0.1:8265",
    profile: ProfileOption = ProfileName.gpu,
    layout: LayoutOption = None,
    index_url: IndexOption = None,
    version: VersionOption = None,
    nats_url: NatsOption = None,
    milvus_host: MilvusOption = None,
    otlp_endpoint: OtlpOption = None,
    serve_host: Annotated[
        str, typer.Option(help="Where the Serve proxy listens on the head.")
    ] = "0.0.0.0",
    serve_port: Annotated[int, typer.Option(help="The Serve proxy's port.")] = 8000,
    web: Annotated[bool, typer.Option(help="Include the web page (/).")] = False,
    only: Annotated[
        list[str] | None,
        typer.Option("--app", help="Deploy only this application (repeat for more)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every application to run.")
    ] = 1800.0,
) -> None:
    """Apply the rendered Serve config to a running Ray cluster and follow it until it runs.

    What `serve deploy` of `aictl render` does, with checks first: every custom resource
    the layout places replicas with must be offered by a node, and a failed install or
    start is reported with its reason.
    """
    cluster = cluster_options(
        index_url,
        version,
        nats_url,
        milvus_host,
        otlp_endpoint,
        http_host=serve_host,
        http_port=serve_port,
    )
    stack = StackOptions(
        profile=profile.value, layout=layout.value if layout else "cluster", with_web=web
    )
    try:
        config = cluster_serve_config(stack, cluster, tuple(only) if only else None)
    except ValueError as exc:
        raise fail(str(exc)) from None
    step(f"Deploying {len(config['applications'])} applications to {address}")
    with dashboard_api(address) as api:
        deploy_and_wait(api, config, print_changes(step), timeout)
    console.print("[bold]Deployed:[/] every application runs.")


@app.command(name="configure")
def configure_command(
    application: Annotated[str, typer.Argument(help="The application to change, e.g. chat.")],
    settings: Annotated[
        list[str],
        typer.Option(
            "--set",
            help="KEY=VALUE of the application's arguments (dots go into objects: "
            "rag.prompt_template=@prompt.txt reads a file; JSON values are parsed). Repeat.",
        ),
    ],
    address: Annotated[
        str | None,
        typer.Option(help="The Ray dashboard (default: the running aictl up stack's)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the application to run again.")
    ] = 600.0,
) -> None:
    """Change one application's arguments on the running platform; the others keep running.

    The chat application's prompt, context budget and chunking are its `rag` arguments,
    so a new prompt restarts the chat replicas and no model. The arguments are checked by
    the application's own builder before anything is applied.
    """
    if address is None:
        state = read_state(Settings())
        if state is None:
            raise fail("no local stack runs (aictl up); give the cluster's --address")
        address = state.dashboard_url
    with dashboard_api(address) as api:
        running = api.running_config()
        changed = with_settings(running, application, [parse_setting(s) for s in settings])
        if changed == running:
            console.print(f"Nothing to change: {application} already runs with these arguments.")
            return
        check_arguments(changed, application)
        before = replica_actors(api.applications())
        step(f"Applying the new arguments of {application}")
        after = redeploy_and_wait(api, changed, application, before, print_changes(step), timeout)
    restarted = sorted(name for name in after if after[name] != before.get(name))
    kept = sorted(name for name in after if after[name] == before.get(name))
    console.print(
        f"[bold]Configured:[/] {', '.join(restarted)} restarted with the new arguments; "
        f"{len(kept)} other applications kept their replicas."
    )


@app.command(name="wheelhouse")
def wheelhouse_command(
    packages: Annotated[
        list[str] | None,
        typer.Argument(
            help="Our packages the cluster installs (default: every one the rendered "
            "applications install)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the wheels go.")] = Path(
        "dist/wheelhouse"
    ),
    find_links: Annotated[
        list[Path] | None, typer.Option(help="Folders of wheels built here (llama-cpp-python).")
    ] = None,
) -> None:
    """Download every third-party wheel our packages need, at the versions installed here.

    Publish them to the cluster's package index beside our wheels (`./dev build`): the
    rendered RayService installs from that index only.
    """
    from aictl.wheelhouse import (
        dependency_closure,
        download_wheels,
        installed_by_cluster,
        third_party,
    )

    wanted = packages or installed_by_cluster()
    try:
        pins = third_party(dependency_closure(wanted))
    except PackageNotFoundError as exc:
        raise fail(str(exc)) from None
    console.print(f"[bold]==>[/] Downloading {len(pins)} wheels that {', '.join(wanted)} need")
    try:
        download_wheels(pins, out, find_links or ())
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    console.print(f"[bold]Wrote[/] {len(pins)} wheels to {out}")


def main() -> None:
    """The ``aictl`` console script."""
    app()
