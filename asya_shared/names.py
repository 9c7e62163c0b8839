"""Actor and queue names: how they are formed and which ones a broker accepts."""

from __future__ import annotations

import re

SINK = "x-sink"  # receives every finished envelope and stores the result
SUMP = "x-sump"  # receives everything that could not be processed
CREW = (SINK, SUMP)
# Crew actors that hold an envelope outside the queues and continue it later themselves: the
# sidecar acks what they park without reporting it paused (they report for themselves).
JOIN = "x-join"  # gathers the parts of a fan-out into one envelope
PAUSE = "x-pause"  # hands a task to a person, until `asya resume` or the gateway resumes it
HOLDING = (JOIN, PAUSE)
RESERVED = (*CREW, *HOLDING)  # no user's actor may take these names

# Actor names become parts of Kubernetes object names and queue names: an RFC 1123 label.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_ACTOR_NAME = 63

# The longest queue name each broker accepts.
MAX_QUEUE_NAME = {"local": 255, "rabbitmq": 255, "sqs": 80, "pubsub": 255}
# These transports create a dead-letter queue named after the queue, which must fit too.
DLQ_SUFFIX = "-dlq"
WITH_DLQ = ("sqs", "pubsub")


class InvalidName(ValueError):
    """An actor, namespace or queue name that Asya cannot use; the message says why."""


def check_actor_name(name: str) -> str:
    if not isinstance(name, str) or not _DNS_LABEL.match(name) or len(name) > MAX_ACTOR_NAME:
        raise InvalidName(
            f"actor name {name!r} is not a DNS label: use 1-{MAX_ACTOR_NAME} lower-case "
            "letters, digits and '-', starting and ending with a letter or digit"
        )
    return name


def queue_name(namespace: str, actor: str) -> str:
    """The queue an actor consumes: `asya-<namespace>-<actor>`."""
    if not _DNS_LABEL.match(namespace or ""):
        raise InvalidName(f"namespace {namespace!r} is not a DNS label")
    return f"asya-{namespace}-{check_actor_name(actor)}"


def dead_letter_name(queue: str) -> str:
    """The dead-letter queue of `queue`, on the brokers that keep one (WITH_DLQ)."""
    return f"{queue}{DLQ_SUFFIX}"


def check_queue_name(name: str, transport: str) -> str:
    """Refuse a name the broker would reject; never truncate (two actors could collide)."""
    limit = MAX_QUEUE_NAME.get(transport)
    if limit is None:
        return name
    if len(name) > limit:
        raise InvalidName(
            f"queue name {name!r} has {len(name)} characters; {transport} allows {limit}. "
            "Shorten the namespace or the actor name."
        )
    if transport in WITH_DLQ and len(name) + len(DLQ_SUFFIX) > limit:
        raise InvalidName(
            f"queue name {name!r} has {len(name)} characters; {transport} allows {limit}, "
            f"and its dead-letter queue {dead_letter_name(name)!r} needs {len(DLQ_SUFFIX)} more. "
            "Shorten the namespace or the actor name."
        )
    return name
