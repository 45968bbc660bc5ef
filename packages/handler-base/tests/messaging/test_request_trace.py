"""A request that names its trace (a ``traceparent`` header) stays in that trace."""

import secrets

from handler_base.messages import ChatRequest, ChatResponse
from handler_base.messaging import flush, request
from handler_base.testing.nats_fixtures import NatsConnect


async def test_an_explicit_traceparent_is_continued_not_replaced(
    nats_connect: NatsConnect,
) -> None:
    nc = await nats_connect()
    seen: list[str] = []

    async def answer(msg: object) -> None:
        seen.append(msg.headers["traceparent"])  # type: ignore[attr-defined]
        await msg.respond(ChatResponse(response="ok").model_dump_json().encode())  # type: ignore[attr-defined]

    await nc.subscribe("trace.test", cb=answer)
    await flush(nc)
    trace_id = secrets.token_hex(16)
    headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    reply = await request(nc, "trace.test", ChatRequest(query="hi"), ChatResponse, headers=headers)
    assert reply.response == "ok"
    assert seen[0].split("-")[1] == trace_id
