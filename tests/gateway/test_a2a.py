"""The A2A front door (asya_gateway/a2a_agent.py) over a real uvicorn gateway, spoken to by
the official a2a-sdk client (card resolver, client factory, bearer auth interceptor).
No handler runs: tests play the sidecars by posting hop reports to the internal port while
the client waits. The mapping unit tests at the end cover every state and part rule."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.client.auth import AuthInterceptor, CredentialService
from a2a.client.client import ClientCallContext
from a2a.client.errors import A2AClientError
from a2a.client.interceptors import ClientCallInterceptor
from a2a.helpers.proto_helpers import get_data_parts, new_data_part
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)
from a2a.utils.errors import (
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from asya_gateway import a2a_mapping as mapping
from asya_gateway.auth import hash_key
from asya_gateway.flows import Flow
from asya_gateway.server import GatewayServer
from asya_shared import pauses, wire
from asya_transports.local import LocalTransport
from tests.gateway.gateway_fixtures import (
    SERVED_STATE,
    ServeGateway,
    receive_envelope,
    report,
    serve_gateway,
)
from tests.support.waiting import eventually

__all__ = ["serve_gateway"]  # fixtures used here

# Generous: only a failing test waits this long, and other tests share the machine.
TIMEOUT_S = 60.0
ACME_KEY = "acme-key"
GLOBEX_KEY = "globex-key"
KEYS = f"{hash_key(ACME_KEY)}: acme\n{hash_key(GLOBEX_KEY)}: globex\n"
TWO_FLOWS = """
flows:
  - name: echo
    route: [a, b]
    description: Echo the input back
  - name: summarize
    route: [c]
"""
ONE_FLOW = """
flows:
  - name: ask
    route: [a]
"""


@dataclass
class Gateway:
    """A served gateway and what a test needs to play its sidecars."""

    server: GatewayServer
    state_dir: Path
    http: httpx.AsyncClient

    async def report(self, *reports: wire.HopReport) -> None:
        response = await self.http.post(
            f"{self.server.internal_url}/internal/v1/reports", json={"reports": list(reports)}
        )
        assert response.status_code == 200, response.text

    async def newest_task(self, key: str = ACME_KEY) -> str:
        """The id of the newest task of `key`'s tenant, once there is one."""

        async def found() -> str:
            response = await self.http.get(
                f"{self.server.url}/v1/tasks", headers={"Authorization": f"Bearer {key}"}
            )
            ids: list[str] = [task["id"] for task in response.json()["tasks"]]
            return ids[0] if ids else ""  # "": not yet

        return await eventually(found, "the A2A message to start a gateway task")

    async def payload(self, actor: str) -> Any:
        """The payload of the next envelope published to `actor`."""
        async with LocalTransport(self.state_dir) as transport:
            return (await receive_envelope(transport, actor))["payload"]

    async def client(self, key: str | None = ACME_KEY, *, streaming: bool = True) -> Client:
        """An A2A client made the documented way: resolve the card, then the factory."""
        http = httpx.AsyncClient(timeout=TIMEOUT_S)
        self._owned.append(http)
        card = await A2ACardResolver(http, self.server.url).get_agent_card()
        factory = ClientFactory(ClientConfig(streaming=streaming, httpx_client=http))
        interceptors: list[ClientCallInterceptor] = [AuthInterceptor(_Key(key))] if key else []
        return factory.create(card, interceptors=interceptors)

    def __post_init__(self) -> None:
        self._owned: list[httpx.AsyncClient] = []

    async def aclose(self) -> None:
        for http in self._owned:
            await http.aclose()


class _Key(CredentialService):
    def __init__(self, key: str) -> None:
        self.key = key

    async def get_credentials(
        self, security_scheme_name: str, context: ClientCallContext | None
    ) -> str | None:
        return self.key if security_scheme_name == mapping.BEARER_SCHEME else None


StartGateway = Callable[..., Coroutine[Any, Any, Gateway]]


@pytest.fixture
async def start_gateway(tmp_path: Path, serve_gateway: ServeGateway) -> AsyncIterator[StartGateway]:
    """Serve gateways (real uvicorn) sharing one SQLite store and one queue directory, so
    a second one is another replica of the first."""
    keys_file = tmp_path / "keys"
    keys_file.write_text(KEYS)
    started: list[Gateway] = []

    async def start(flows: str = TWO_FLOWS, *, keys: bool = True) -> Gateway:
        flows_file = tmp_path / f"flows-{len(started)}.yaml"
        flows_file.write_text(flows)
        server = await serve_gateway(
            flows_file=str(flows_file), api_keys_file=str(keys_file) if keys else None
        )
        state_dir = tmp_path / SERVED_STATE
        started.append(Gateway(server, state_dir, httpx.AsyncClient(timeout=TIMEOUT_S)))
        return started[-1]

    yield start
    for gateway in started:
        await gateway.aclose()
        await gateway.http.aclose()


def message(
    *parts: Part, skill: str | None = "echo", context_id: str = "", task_id: str = ""
) -> Message:
    made = Message(
        message_id="m-1", role=Role.ROLE_USER, parts=parts, context_id=context_id, task_id=task_id
    )
    if skill is not None:
        made.metadata.update({"skill": skill})
    return made


def request(sent: Message, *, now: bool = False) -> SendMessageRequest:
    return SendMessageRequest(
        message=sent, configuration=SendMessageConfiguration(return_immediately=now)
    )


async def send(client: Client, sent: SendMessageRequest) -> list[StreamResponse]:
    async with asyncio.timeout(TIMEOUT_S):
        return [event async for event in client.send_message(sent)]


async def sent_task(client: Client, sent: SendMessageRequest) -> Task:
    """The task a non-streaming client gets back for `sent`."""
    (only,) = await send(client, sent)
    assert only.HasField("task")
    return only.task


def journey(task_id: str) -> list[wire.HopReport]:
    """Through a and b to x-sink, with two tokens streamed by a."""
    tokens = [{"type": "token", "text": "Hel"}, {"type": "token", "text": "lo"}]
    return [
        report(task_id, "received", curr="a", next_=["b"]),
        report(task_id, "fly", curr="a", next_=["b"], events=tokens),
        report(task_id, "routed", prev=["a"], curr="b"),
        report(task_id, "succeeded", prev=["a", "b"], curr="x-sink", result=RESULT),
    ]


RESULT = {"completion": "Hello", "tokens": 2}


# ---------------------------------------------------------------------------- the card


async def test_the_card_lists_the_flows_as_skills_with_the_endpoint_and_bearer_auth(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:  # no key: the card is public
        card: AgentCard = await A2ACardResolver(http, gateway.server.url).get_agent_card()
    assert [(skill.id, skill.name) for skill in card.skills] == [
        ("echo", "echo"),
        ("summarize", "summarize"),
    ]
    echo = card.skills[0]
    assert echo.description == "Echo the input back"
    assert list(echo.tags) == ["asya-flow", "a", "b"]
    assert list(echo.input_modes) == ["application/json", "text/plain"]
    assert "'summarize': c" in card.skills[1].description
    (interface,) = card.supported_interfaces
    assert (interface.url, interface.protocol_binding, interface.protocol_version) == (
        f"{gateway.server.url}/a2a", "JSONRPC", "1.0"
    )  # fmt: skip
    assert card.capabilities.streaming
    scheme = card.security_schemes[mapping.BEARER_SCHEME].http_auth_security_scheme
    assert scheme.scheme == "Bearer"
    assert [list(req.schemes) for req in card.security_requirements] == [[mapping.BEARER_SCHEME]]
    assert card.name == "Asya gateway"
    assert card.version


async def test_the_card_asks_for_no_key_when_auth_is_off(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(keys=False)
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
        card = await A2ACardResolver(http, gateway.server.url).get_agent_card()
    assert not card.security_schemes
    assert not card.security_requirements
    client = await gateway.client(key=None, streaming=False)
    started = await sent_task(client, request(message(Part(text="hi")), now=True))
    assert started.status.state == TaskState.TASK_STATE_SUBMITTED


# ----------------------------------------------------------------------------- sending


async def test_a_blocking_send_answers_the_completed_task_with_its_result(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    client = await gateway.client(streaming=False)
    sent = request(message(new_data_part({"text": "hi", "n": 3}), context_id="ctx-1"))

    async def play_sidecars() -> tuple[str, Any]:
        task_id = await gateway.newest_task()
        payload = await gateway.payload("a")
        await gateway.report(*journey(task_id))
        return task_id, payload

    driver = asyncio.create_task(play_sidecars())
    answer = await sent_task(client, sent)
    task_id, payload = await driver

    assert payload == {"text": "hi", "n": 3}  # an int again, not the double a Value holds
    assert (answer.id, answer.context_id) == (task_id, "ctx-1")
    assert answer.status.state == TaskState.TASK_STATE_COMPLETED
    (artifact,) = answer.artifacts
    assert artifact.artifact_id == mapping.RESULT_ARTIFACT_ID
    assert mapping.plain(get_data_parts(artifact.parts)) == [RESULT]
    assert [part.text for part in artifact.parts if part.HasField("text")] == ["Hello"]
    # The same task as the REST API has it.
    rest = await gateway.http.get(
        f"{gateway.server.url}/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {ACME_KEY}"}
    )
    assert (rest.json()["status"], rest.json()["result"]) == ("succeeded", RESULT)


async def test_a_text_only_message_to_the_only_flow_is_a_query(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(ONE_FLOW)
    client = await gateway.client(streaming=False)
    sent = request(message(Part(text="what is"), Part(text="asya?"), skill=None), now=True)
    answer = await sent_task(client, sent)
    # Non-blocking: the task as it stands, with a context id made up for it.
    assert answer.status.state == TaskState.TASK_STATE_SUBMITTED
    assert answer.context_id
    assert await gateway.payload("a") == {"query": "what is\nasya?"}


async def test_a_message_without_a_skill_to_several_flows_is_refused_listing_them(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    client = await gateway.client(streaming=False)
    with pytest.raises(InvalidParamsError, match="echo, summarize"):
        await send(client, request(message(Part(text="hi"), skill=None)))
    with pytest.raises(InvalidParamsError, match="no skill 'nope'; the skills are: echo"):
        await send(client, request(message(Part(text="hi"), skill="nope")))


async def test_a_failed_task_is_failed_with_its_error(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    client = await gateway.client(streaming=False)

    async def fail() -> None:
        task_id = await gateway.newest_task()
        error = {"type": "ValueError", "message": "the input has no url", "mro": ["ValueError"]}
        await gateway.report(report(task_id, "failed", reason="HandlerError", error=error))

    driver = asyncio.create_task(fail())
    answer = await sent_task(client, request(message(Part(text="hi"))))
    await driver
    assert answer.status.state == TaskState.TASK_STATE_FAILED
    assert not answer.artifacts
    text = answer.status.message.parts[0].text
    assert "ValueError: the input has no url" in text
    assert "HandlerError" in text


# --------------------------------------------------------------------------- streaming


async def test_a_stream_shows_the_task_working_its_tokens_and_the_completed_result(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    client = await gateway.client()
    events: list[StreamResponse] = []
    async with asyncio.timeout(TIMEOUT_S):
        async for event in client.send_message(request(message(Part(text="hi")))):
            events.append(event)
            if len(events) == 1:  # the task exists and is followed: play the sidecars
                await gateway.report(*journey(event.task.id))

    first, *updates = events
    assert first.task.status.state == TaskState.TASK_STATE_SUBMITTED
    task_id, context_id = first.task.id, first.task.context_id
    seen: list[tuple[str, Any]] = []
    for event in updates:
        if event.HasField("status_update"):
            update = event.status_update
            assert (update.task_id, update.context_id) == (task_id, context_id)
            seen.append(("status", TaskState.Name(update.status.state)))
        else:
            chunk = event.artifact_update
            assert (chunk.task_id, chunk.context_id) == (task_id, context_id)
            texts = [part.text for part in chunk.artifact.parts if part.HasField("text")]
            seen.append(
                ("artifact", (chunk.artifact.artifact_id, texts, chunk.append, chunk.last_chunk))
            )
    assert seen == [
        ("status", "TASK_STATE_WORKING"),
        ("artifact", ("stream", ["Hel"], False, False)),
        ("artifact", ("stream", ["lo"], True, False)),
        ("status", "TASK_STATE_WORKING"),
        ("artifact", ("result", ["Hello"], False, True)),
        ("status", "TASK_STATE_COMPLETED"),
    ]
    assert updates[0].status_update.metadata["actor"] == "a"
    result = updates[-2].artifact_update.artifact
    assert mapping.plain(get_data_parts(result.parts)) == [RESULT]


async def test_another_replica_answers_get_and_subscribe_for_a_task_it_did_not_start(
    start_gateway: StartGateway,
) -> None:
    first = await start_gateway()
    second = await start_gateway()
    started = await sent_task(
        await first.client(streaming=False),
        request(message(Part(text="hi"), context_id="ctx-9"), now=True),
    )
    other = await second.client()
    got = await other.get_task(GetTaskRequest(id=started.id))
    assert (got.id, got.context_id, got.status.state) == (
        started.id, "ctx-9", TaskState.TASK_STATE_SUBMITTED
    )  # fmt: skip

    states: list[str] = []
    async with asyncio.timeout(TIMEOUT_S):
        async for event in other.subscribe(SubscribeToTaskRequest(id=started.id)):
            if event.HasField("task"):
                await first.report(*journey(started.id))
            elif event.HasField("status_update"):
                states.append(TaskState.Name(event.status_update.status.state))
    assert states[-1] == "TASK_STATE_COMPLETED"
    # A task that ended has nothing to subscribe to.
    with pytest.raises(UnsupportedOperationError, match="already ended"):
        await anext(other.subscribe(SubscribeToTaskRequest(id=started.id)))


# ----------------------------------------------------------------------- get and cancel


async def test_cancel_cancels_the_gateway_task(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    client = await gateway.client(streaming=False)
    started = await sent_task(client, request(message(Part(text="hi")), now=True))

    canceled = await client.cancel_task(CancelTaskRequest(id=started.id))
    assert (canceled.id, canceled.status.state) == (started.id, TaskState.TASK_STATE_CANCELED)
    assert "canceled" in canceled.status.message.parts[0].text
    rest = await gateway.http.get(
        f"{gateway.server.url}/v1/tasks/{started.id}",
        headers={"Authorization": f"Bearer {ACME_KEY}"},
    )
    assert rest.json()["status"] == "canceled"
    got = await client.get_task(GetTaskRequest(id=started.id))
    assert got.status.state == TaskState.TASK_STATE_CANCELED


async def test_a_finished_task_cannot_be_canceled(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    client = await gateway.client(streaming=False)
    started = await sent_task(client, request(message(Part(text="hi")), now=True))
    await gateway.report(*journey(started.id))
    with pytest.raises(TaskNotCancelableError, match="already succeeded"):
        await client.cancel_task(CancelTaskRequest(id=started.id))


async def test_an_unknown_or_foreign_task_is_not_found(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    acme = await gateway.client(streaming=False)
    globex = await gateway.client(GLOBEX_KEY, streaming=False)
    with pytest.raises(TaskNotFoundError, match="no task 'nope'"):
        await acme.get_task(GetTaskRequest(id="nope"))
    started = await sent_task(acme, request(message(Part(text="hi")), now=True))
    with pytest.raises(TaskNotFoundError):
        await globex.get_task(GetTaskRequest(id=started.id))
    with pytest.raises(TaskNotFoundError):
        await globex.cancel_task(CancelTaskRequest(id=started.id))


PAUSE_FLOW = """
flows:
  - name: echo
    route: [a, x-pause, b]
"""


async def pause_at_x_pause(gateway: Gateway, task_id: str, spec: dict[str, Any]) -> None:
    """Play a (pass the envelope on) and x-pause (park it in the gateway) for the task."""
    async with LocalTransport(gateway.state_dir) as transport:
        envelope = await receive_envelope(transport, "a")
    assert envelope["id"] == task_id
    envelope["route"] = {"prev": ["a"], "curr": "x-pause", "next": ["b"]}
    envelope["headers"][pauses.PAUSE_HEADER] = spec
    body = {
        "envelope": envelope,
        "pause": pauses.parse_spec(spec).to_json(),
        "paused_at": "2030-01-01T00:00:00.000Z",
        "expires_at": "2030-01-08T00:00:00.000Z",
    }
    response = await gateway.http.post(
        f"{gateway.server.internal_url}/internal/v1/pauses", json=body
    )
    assert response.status_code == 200, response.text


APPROVE = {"prompt": "Send it?", "fields": [{"name": "approved", "type": "boolean"}]}


async def test_a_paused_task_asks_for_input_and_a_message_resumes_it(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(PAUSE_FLOW)
    client = await gateway.client(streaming=False)
    started = await sent_task(client, request(message(new_data_part({"d": 1})), now=True))
    await pause_at_x_pause(gateway, started.id, APPROVE)

    got = await client.get_task(GetTaskRequest(id=started.id))

    assert got.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    text, data = got.status.message.parts
    assert "waiting for input: Send it?" in text.text
    assert "- approved (boolean, required)" in text.text
    shown = mapping.plain(get_data_parts([data])[0])
    assert (shown["prompt"], shown["fields"][0]["name"]) == ("Send it?", "approved")
    # An input that does not fit: a JSON-RPC error naming the field; still paused.
    wrong = message(new_data_part({"approved": "yes"}), task_id=started.id)
    with pytest.raises(InvalidParamsError, match=r"input\.approved must be a boolean"):
        await send(client, request(wrong, now=True))
    with pytest.raises(InvalidParamsError, match="needs its input as a data part"):
        await send(client, request(message(Part(text="yes"), task_id=started.id), now=True))

    resumed = await sent_task(
        client, request(message(new_data_part({"approved": True}), task_id=started.id), now=True)
    )

    assert resumed.id == started.id
    assert resumed.status.state == TaskState.TASK_STATE_WORKING
    assert await gateway.payload("b") == {"d": 1, "approved": True}
    with pytest.raises(UnsupportedOperationError, match="can only continue a paused task"):
        await send(client, request(message(Part(text="more"), task_id=started.id)))


async def test_a_text_message_resumes_a_pause_with_one_string_field(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(PAUSE_FLOW)
    client = await gateway.client(streaming=False)
    started = await sent_task(client, request(message(new_data_part({"d": 1})), now=True))
    await pause_at_x_pause(gateway, started.id, {"fields": [{"name": "reply"}]})

    await sent_task(client, request(message(Part(text="Sure, go"), task_id=started.id), now=True))

    assert await gateway.payload("b") == {"d": 1, "reply": "Sure, go"}


async def test_a_blocking_send_returns_when_the_task_pauses(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(PAUSE_FLOW)
    client = await gateway.client(streaming=False)

    async def play() -> None:
        task_id = await gateway.newest_task()
        await pause_at_x_pause(gateway, task_id, APPROVE)

    player = asyncio.create_task(play())
    answered = await sent_task(client, request(message(new_data_part({"d": 1}))))
    await player

    assert answered.status.state == TaskState.TASK_STATE_INPUT_REQUIRED


# -------------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("authorization", "says"),
    [(None, "needs an API key"), ("Bearer wrong", "the API key is not valid")],
)
async def test_the_endpoint_needs_a_valid_key(
    start_gateway: StartGateway, authorization: str | None, says: str
) -> None:
    gateway = await start_gateway()
    body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}
    headers = {"A2A-Version": "1.0"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = await gateway.http.post(f"{gateway.server.url}/a2a", json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert says in response.json()["error"]["message"]


async def test_a_client_without_credentials_is_refused(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    keyless = await gateway.client(key=None, streaming=False)
    with pytest.raises(A2AClientError, match="HTTP Error 401"):
        await keyless.get_task(GetTaskRequest(id="x"))


async def test_a_body_the_broker_could_not_take_is_refused_before_it_is_read(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    # A broker that takes 64 KiB (the local one takes 256 MiB: too much to send in a test).
    limit = 65536
    gateway.server.gateway.transport.max_message_bytes = limit

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    response = await gateway.http.post(
        f"{gateway.server.url}/a2a",
        content=chunks(),
        headers={"Authorization": f"Bearer {ACME_KEY}", "A2A-Version": "1.0"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


# ----------------------------------------------------------------------------- mapping


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("pending", TaskState.TASK_STATE_SUBMITTED),
        ("running", TaskState.TASK_STATE_WORKING),
        ("paused", TaskState.TASK_STATE_INPUT_REQUIRED),
        ("succeeded", TaskState.TASK_STATE_COMPLETED),
        ("failed", TaskState.TASK_STATE_FAILED),
        ("canceled", TaskState.TASK_STATE_CANCELED),
    ],
)
def test_every_status_maps_to_its_state(status: str, state: TaskState) -> None:
    task = {
        "id": "t-1",
        "status": status,
        "actor": "a",
        "progress": 0.5,
        "result": {"completion": "hi"} if status == "succeeded" else None,
        "error": {"type": "E", "message": "boom"} if status == "failed" else None,
        "reason": None,
        "updated_at": "2030-01-01T00:00:00.000Z",
    }
    made = mapping.a2a_task(task, "ctx")
    assert (made.id, made.context_id, made.status.state) == ("t-1", "ctx", state)
    assert len(made.artifacts) == (1 if status == "succeeded" else 0)
    says_why = status in ("failed", "canceled", "paused")
    assert made.status.HasField("message") == says_why
    assert made.status.timestamp.ToJsonString() == "2030-01-01T00:00:00Z"


def test_a_paused_status_says_what_the_pause_asks_for() -> None:
    pause = {
        "prompt": "Send it?",
        "fields": [{"name": "reply", "type": "string", "prompt": "Your words", "required": False}],
        "paused_at": "2030-01-01T00:00:00.000Z",
        "expires_at": "2030-01-02T00:00:00.000Z",
    }
    change = {"status": "paused", "actor": "x-pause", "progress": 0.5, "pause": pause}

    event = mapping.TaskEvents("t", "c").status(change)

    assert event.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    text, data = event.status.message.parts
    assert "- reply (string, optional): Your words" in text.text
    assert "(or as text)" in text.text
    assert "expires at 2030-01-02T00:00:00.000Z" in text.text
    assert mapping.plain(get_data_parts([data])[0]) == pause


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="'lost' is not a gateway task status"):
        mapping.a2a_state("lost")


def test_the_payload_is_the_data_part_else_the_text_as_a_query() -> None:
    assert mapping.payload_of(message(new_data_part({"k": [1, 2.5]}), Part(text="x"))) == {
        "k": [1, 2.5]
    }
    assert mapping.payload_of(message(Part(text="a"), Part(text="b"))) == {"query": "a\nb"}
    with pytest.raises(InvalidParamsError, match="must be a JSON object"):
        mapping.payload_of(message(new_data_part([1])))
    with pytest.raises(InvalidParamsError, match="2 data parts"):
        mapping.payload_of(message(new_data_part({}), new_data_part({})))
    with pytest.raises(InvalidParamsError, match="neither a data part nor a text part"):
        mapping.payload_of(message(Part(url="https://example.com/x")))


def test_the_skill_comes_from_the_message_then_the_request() -> None:
    flows = {"echo": Flow("echo", ("a",)), "other": Flow("other", ("b",))}
    sent = request(message(Part(text="x"), skill=None))
    assert mapping.requested_skill(sent) is None
    sent.metadata.update({"flow": "other"})
    assert mapping.choose_flow(mapping.requested_skill(sent), flows) == "other"
    sent.message.metadata.update({"skill": "echo"})
    assert mapping.choose_flow(mapping.requested_skill(sent), flows) == "echo"
    with pytest.raises(InvalidParamsError, match="no flows"):
        mapping.choose_flow(None, {})
    assert mapping.choose_flow(None, {"echo": flows["echo"]}) == "echo"


def test_fly_tokens_are_text_and_other_events_data() -> None:
    events = mapping.TaskEvents("t", "c")
    token = events.fly({"type": "token", "text": "Hel"})
    other = events.fly({"progress": 3})
    assert (token.artifact.parts[0].text, token.append) == ("Hel", False)
    assert (mapping.plain(get_data_parts(other.artifact.parts)), other.append) == (
        [{"progress": 3}], True
    )  # fmt: skip
    assert token.artifact.artifact_id == other.artifact.artifact_id == mapping.FLY_ARTIFACT_ID


def test_a_result_without_completion_is_data_only() -> None:
    artifact = mapping.result_artifact([1, 2])
    assert [part.WhichOneof("content") for part in artifact.parts] == ["data"]
    assert mapping.plain(get_data_parts(artifact.parts)) == [[1, 2]]


@pytest.mark.parametrize("key", ["skill", "skillId", "skill_id", "flow"])
def test_every_spelling_of_the_skill_key_is_read(key: str) -> None:
    sent = request(message(Part(text="x"), skill=None))
    sent.message.metadata.update({key: "other"})
    assert mapping.requested_skill(sent) == "other"
