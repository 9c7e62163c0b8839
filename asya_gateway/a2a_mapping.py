"""Gateway tasks and flows in A2A 1.0 terms (the protobuf types of a2a-sdk): pure functions,
no I/O. a2a_agent.py calls them; everything that decides what an A2A client sees is here.

    flow                      -> skill (id = the flow's name)
    message metadata "skill"  -> which flow a message starts ("flow" is accepted too)
    message data part         -> the payload; with none, the text parts as {"query": text}
    message with a taskId     -> resumes that paused task: its data part is the input (or,
                                 for a pause with one string field, its text)
    paused task               -> input-required; the status message has the prompt as text
                                 and the pause ({"prompt", "fields", ...}) as a data part
    task (its GET shape)      -> Task: id, contextId, status, the result as an artifact
    FLY event                 -> an artifact update appended to one artifact per stream

The A2A task id is the gateway task id, and the context id travels in the task's headers
(`CONTEXT_HEADER`), so any replica answers for any task from the store alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from a2a.helpers.proto_helpers import get_data_parts, new_data_part
from a2a.server.events import Event
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Artifact,
    HTTPAuthSecurityScheme,
    Message,
    Part,
    Role,
    SecurityRequirement,
    SecurityScheme,
    SendMessageRequest,
    StringList,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT, TransportProtocol
from a2a.utils.errors import (
    A2AError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    TaskNotFoundError,
)

from asya_gateway.errors import ApiError
from asya_gateway.flows import Flow

__all__ = [
    "BEARER_SCHEME",
    "CONTEXT_HEADER",
    "FLY_ARTIFACT_ID",
    "INPUT_MODES",
    "OUTPUT_MODES",
    "RESULT_ARTIFACT_ID",
    "STATES",
    "TaskEvents",
    "a2a_state",
    "a2a_task",
    "agent_card",
    "choose_flow",
    "context_id_of",
    "payload_of",
    "plain",
    "protocol_error",
    "requested_skill",
    "result_artifact",
    "task_status",
]

# The task header that keeps the A2A context id: a GetTask on another replica echoes it.
CONTEXT_HEADER = "a2a-context-id"
# A task's final payload is always this artifact; what a handler streamed (FLY) is another.
RESULT_ARTIFACT_ID = "result"
FLY_ARTIFACT_ID = "stream"
BEARER_SCHEME = "bearer"
INPUT_MODES = ("application/json", "text/plain")
OUTPUT_MODES = ("application/json", "text/plain")
# The metadata keys that name a message's skill, in the order they are looked at.
# "skill" is what the docs say; the others are the spellings clients reach for first.
SKILL_KEYS = ("skill", "skillId", "skill_id", "flow")

STATES: Mapping[str, TaskState] = {
    "pending": TaskState.TASK_STATE_SUBMITTED,
    "running": TaskState.TASK_STATE_WORKING,
    "paused": TaskState.TASK_STATE_INPUT_REQUIRED,
    "succeeded": TaskState.TASK_STATE_COMPLETED,
    "failed": TaskState.TASK_STATE_FAILED,
    "canceled": TaskState.TASK_STATE_CANCELED,
}
# Whole numbers within this bound are exact in a double, so reading them back as int is safe.
_EXACT_INT = 2**53


def a2a_state(status: str) -> TaskState:
    """The A2A state of a gateway status (pending, running, ...)."""
    try:
        return STATES[status]
    except KeyError:
        raise ValueError(f"{status!r} is not a gateway task status") from None


# ------------------------------------------------------------------------------- the card


def agent_card(
    *, rpc_url: str, flows: Iterable[Flow], version: str, auth_required: bool
) -> AgentCard:
    """The card of a gateway whose JSON-RPC endpoint is `rpc_url`: one skill per flow.

    The bearer scheme and its requirement are on the card only when the gateway checks
    keys: a card that asks for a key nobody checks would send clients looking for one.
    """
    card = AgentCard(
        name="Asya gateway",
        description=(
            "Asya pipelines as A2A skills: each skill is a named flow (a route of actors). "
            'Pick one with the message metadata key "skill"; send the input as a data part '
            '(a JSON object), or text, which arrives as {"query": "<text>"}.'
        ),
        version=version,
        supported_interfaces=[
            AgentInterface(
                url=rpc_url,
                protocol_binding=TransportProtocol.JSONRPC.value,
                protocol_version=PROTOCOL_VERSION_CURRENT,
            )
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=list(INPUT_MODES),
        default_output_modes=list(OUTPUT_MODES),
        skills=[_skill(flow) for flow in sorted(flows, key=lambda flow: flow.name)],
    )
    if auth_required:
        card.security_schemes[BEARER_SCHEME].CopyFrom(
            SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="Bearer",
                    description="An API key of this gateway: `Authorization: Bearer <key>`",
                )
            )
        )
        card.security_requirements.append(
            SecurityRequirement(schemes={BEARER_SCHEME: StringList()})
        )
    return card


def _skill(flow: Flow) -> AgentSkill:
    route = " -> ".join(flow.route)
    return AgentSkill(
        id=flow.name,
        name=flow.name,
        description=flow.description or f"Runs the flow {flow.name!r}: {route}",
        tags=["asya-flow", *flow.route],
        input_modes=list(INPUT_MODES),
        output_modes=list(OUTPUT_MODES),
    )


# ---------------------------------------------------------------------- what a message asks


def requested_skill(request: SendMessageRequest) -> str | None:
    """The skill a message names: its metadata's "skill" (or another of SKILL_KEYS), else the
    request's."""
    for metadata in (request.message.metadata, request.metadata):
        for key in SKILL_KEYS:
            if key in metadata:
                value = metadata[key]
                if not isinstance(value, str) or not value:
                    raise InvalidParamsError(
                        f'metadata "{key}" must be the id of a skill (a string), not {value!r}'
                    )
                return value
    return None


def choose_flow(requested: str | None, flows: Mapping[str, Flow]) -> str:
    """The flow a message starts: the one it names, or the only one there is."""
    known = ", ".join(sorted(flows))
    if not flows:
        raise InvalidParamsError(
            "this gateway has no flows, so it has no skills to run; its operator adds them "
            "in the flows file (--flows)"
        )
    if requested is None:
        if len(flows) == 1:
            return next(iter(flows))
        raise InvalidParamsError(
            f'say which skill to run: set the message metadata "skill" to one of: {known}'
        )
    if requested not in flows:
        raise InvalidParamsError(f"no skill {requested!r}; the skills are: {known}")
    return requested


def payload_of(message: Message) -> Any:
    """The payload a message carries: its data part (an object), or else its text parts
    joined by newlines, as {"query": text}."""
    data = [part for part in message.parts if part.HasField("data")]
    if len(data) > 1:
        raise InvalidParamsError(
            f"the message has {len(data)} data parts; send the whole input as one data part "
            "(a JSON object)"
        )
    if data:
        value = plain(get_data_parts(data)[0])
        if not isinstance(value, dict):
            raise InvalidParamsError(
                f"the data part must be a JSON object (the payload), not {type(value).__name__}"
                ' ; wrap it, like {"input": ...}'
            )
        return value
    texts = [part.text for part in message.parts if part.HasField("text")]
    if not texts:
        raise InvalidParamsError(
            "the message has neither a data part nor a text part; send the input as a data "
            'part (a JSON object) or as text, which arrives as {"query": "<text>"}'
        )
    return {"query": "\n".join(texts)}


def resume_input(message: Message, pause: Mapping[str, Any]) -> dict[str, Any]:
    """The input a message gives a paused task: its data part (an object of the pause's
    field values), or, when the pause asks for exactly one string field, its text."""
    data = [part for part in message.parts if part.HasField("data")]
    if len(data) > 1:
        raise InvalidParamsError(
            f"the message has {len(data)} data parts; send the input as one data part (a JSON "
            "object of the pause's fields)"
        )
    fields = [field for field in pause.get("fields", []) if isinstance(field, dict)]
    if data:
        value = plain(get_data_parts(data)[0])
        if not isinstance(value, dict):
            raise InvalidParamsError(
                f"the data part must be a JSON object of the pause's fields, not "
                f"{type(value).__name__}{_fields_hint(fields)}"
            )
        return value
    texts = [part.text for part in message.parts if part.HasField("text")]
    if texts and len(fields) == 1 and fields[0].get("type", "string") == "string":
        return {str(fields[0]["name"]): "\n".join(texts)}
    if texts and not fields:
        return {}
    raise InvalidParamsError(
        "resuming this paused task needs its input as a data part (a JSON object)"
        + _fields_hint(fields)
    )


def _fields_hint(fields: Sequence[Mapping[str, Any]]) -> str:
    if not fields:
        return "; this pause asks for no fields: send {}"
    described = ", ".join(
        f"{field.get('name')} ({field.get('type', 'string')}"
        f"{', required' if field.get('required', True) else ''})"
        for field in fields
    )
    return f"; its fields: {described}"


def plain(value: Any) -> Any:
    """`value` with whole-number floats made ints again. A data part is a protobuf Value,
    which stores every number as a double: without this, the 3 a client sent reaches the
    handler (and the flow's input schema) as 3.0."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_INT:
        return int(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


# ------------------------------------------------------------------------ what a task says


def context_id_of(task_id: str, headers: Mapping[str, str]) -> str:
    """The A2A context of a task: the one its message gave or was given, else (a task
    submitted over REST) the task id itself, so every task has a stable context."""
    return headers.get(CONTEXT_HEADER) or task_id


def a2a_task(task: Mapping[str, Any], context_id: str) -> Task:
    """A gateway task (its GET shape, Task.to_json()) as an A2A Task."""
    made = Task(id=task["id"], context_id=context_id, status=task_status(task))
    if task["status"] == "succeeded":
        made.artifacts.append(result_artifact(task.get("result")))
    metadata = {
        key: task[key] for key in ("actor", "progress", "reason") if task.get(key) is not None
    }
    if metadata:
        made.metadata.update(metadata)
    return made


def task_status(task: Mapping[str, Any]) -> TaskStatus:
    """The status of a task (its GET shape): its state, and for a failed, canceled or
    paused one a message that says why."""
    status = TaskStatus(state=a2a_state(task["status"]))
    if task.get("updated_at"):
        status.timestamp.FromJsonString(task["updated_at"])
    text = _status_text(task)
    if text is not None:
        parts = [Part(text=text)]
        if task["status"] == "paused" and isinstance(task.get("pause"), dict):
            parts.append(new_data_part(task["pause"]))
        status.message.CopyFrom(
            Message(
                message_id=f"{task['id']}-{task['status']}",
                task_id=task["id"],
                role=Role.ROLE_AGENT,
                parts=parts,
            )
        )
    return status


def _status_text(task: Mapping[str, Any]) -> str | None:
    at = f" at actor {task['actor']!r}" if task.get("actor") else ""
    reason = f" (reason {task['reason']})" if task.get("reason") else ""
    status = task["status"]
    if status == "failed":
        error = task.get("error") or {}
        what = error.get("message") or "no error message was reported"
        kind = f"{error['type']}: " if error.get("type") else ""
        return f"the task failed{at}{reason}: {kind}{what}"
    if status == "canceled":
        return f"the task was canceled{at}{reason}"
    if status == "paused":
        pause = task.get("pause")
        if not isinstance(pause, dict):
            return f"the task is paused{at}, waiting for input{reason}"
        prompt = f": {pause['prompt']}" if pause.get("prompt") else ""
        fields = [field for field in pause.get("fields", []) if isinstance(field, dict)]
        asks = "".join(
            f"\n- {field.get('name')} ({field.get('type', 'string')}"
            f"{', required' if field.get('required', True) else ', optional'})"
            f"{': ' + str(field['prompt']) if field.get('prompt') else ''}"
            for field in fields
        )
        one_text = len(fields) == 1 and fields[0].get("type", "string") == "string"
        return (
            f"the task is paused{at}, waiting for input{prompt}{asks}\n"
            f"Resume it with a message with this taskId and the input as a data part"
            f"{' (or as text)' if one_text else ''}; it expires at {pause.get('expires_at')}"
        )
    return None


def result_artifact(result: Any) -> Artifact:
    """The final payload as an artifact: a data part, plus a text part when it has a
    `completion` string (what the built-in LLM callers answer), for clients that show text."""
    parts = [new_data_part(result)]
    if isinstance(result, dict) and isinstance(result.get("completion"), str):
        parts.append(Part(text=result["completion"]))
    return Artifact(artifact_id=RESULT_ARTIFACT_ID, name="result", parts=parts)


def fly_part(event: Any) -> Part:
    """One FLY event as a part: a token's text as text, anything else as data."""
    if (
        isinstance(event, dict)
        and event.get("type") == "token"
        and isinstance(event.get("text"), str)
    ):
        return Part(text=event["text"])
    return new_data_part(event)


class TaskEvents:
    """What a stream of one task sends, update by update: the task first, then status
    updates, FLY events as chunks of one artifact, and at the end the result artifact and
    the final status (A2A 1.0 has no `final` flag: a terminal state ends the stream)."""

    def __init__(self, task_id: str, context_id: str) -> None:
        self.task_id = task_id
        self.context_id = context_id
        self._chunks = 0

    def opening(self, task: Mapping[str, Any]) -> Task:
        return a2a_task(task, self.context_id)

    def status(self, change: Mapping[str, Any]) -> TaskStatusUpdateEvent:
        """A change ({"status", "actor", "progress"}, with "pause" when paused) of a task
        still under way; a pause says what it waits for, as GetTask does."""
        if change["status"] == "paused":
            status = task_status({"id": self.task_id, **change})
        else:
            status = TaskStatus(state=a2a_state(change["status"]))
        event = TaskStatusUpdateEvent(
            task_id=self.task_id, context_id=self.context_id, status=status
        )
        event.metadata.update(
            {key: change[key] for key in ("actor", "progress") if change.get(key) is not None}
        )
        return event

    def fly(self, event: Any) -> TaskArtifactUpdateEvent:
        self._chunks += 1
        return TaskArtifactUpdateEvent(
            task_id=self.task_id,
            context_id=self.context_id,
            artifact=Artifact(artifact_id=FLY_ARTIFACT_ID, name="stream", parts=[fly_part(event)]),
            # The first chunk starts the artifact; every later one extends it.
            append=self._chunks > 1,
            last_chunk=False,
        )

    def final(self, task: Mapping[str, Any]) -> Sequence[Event]:
        """The end of the stream, from the task as it ended (its GET shape)."""
        events: list[Event] = []
        if task["status"] == "succeeded":
            events.append(
                TaskArtifactUpdateEvent(
                    task_id=self.task_id,
                    context_id=self.context_id,
                    artifact=result_artifact(task.get("result")),
                    append=False,
                    last_chunk=True,
                )
            )
        final = TaskStatusUpdateEvent(
            task_id=self.task_id, context_id=self.context_id, status=task_status(task)
        )
        events.append(final)
        return events


# -------------------------------------------------------------------------------- errors


def protocol_error(error: ApiError) -> A2AError:
    """A gateway error as the A2A error a client can act on; the message is kept."""
    data = {"code": error.code}
    if error.code == "not_found":
        return TaskNotFoundError(error.message, data=data)
    if error.status in (400, 404, 413):
        return InvalidParamsError(error.message, data=data)
    if error.status == 409:
        return InvalidRequestError(error.message, data=data)
    return InternalError(error.message, data=data)
