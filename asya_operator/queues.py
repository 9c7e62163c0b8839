"""The operator's own queue administration: create, delete and measure actors' queues.

It goes through the sidecar's transports (one code path per broker for everyone), configured
with the environment variables a sidecar gets (one list: transport_env.variables), with
Secret values read here:

- rabbitmq: the URL is the `url` key (or the key `credentials.secretRef.keys.url` names) of
  the Secret `credentials.secretRef.name` in the operator's own namespace
  (`operatorNamespace`), else `url`. It is the same Secret name the actors' namespaces hold
  for the pods and KEDA, so one name works everywhere.
- sqs and pubsub: the transports authenticate with the process's own cloud identity (the AWS
  credential chain; Google's application default credentials), so the operator pod needs
  that identity itself (pod identity, or the AWS_* / GOOGLE_APPLICATION_CREDENTIALS
  environment filled from the Secret by the Helm chart).

One open transport is kept per configured transport and reused; it is opened again when its
settings (or the Secret) change, and dropped after the broker was unreachable, so the next
call starts afresh. Every call is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import asya_transports as transports
from asya_operator import kube, transport_env
from asya_operator.config import OperatorConfig, TransportConfig
from asya_shared import names

DEFAULT_TIMEOUT_S = 20.0
T = TypeVar("T")


class QueueAdminError(Exception):
    """A problem that trying again will not fix: the broker refused, a name is too long."""


class QueueGone(Exception):
    """The queue does not exist."""


class BrokerUnavailable(Exception):
    """The broker (or the credentials to reach it) cannot be had now; try again later."""


def secret_value(secret: Mapping[str, Any], key: str, where: str) -> str:
    data = secret.get("data") or {}
    string_data = secret.get("stringData") or {}
    if isinstance(data, dict) and isinstance(data.get(key), str):
        try:
            return base64.b64decode(str(data[key]), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise BrokerUnavailable(f"key {key!r} of Secret {where} is not base64 text") from exc
    if isinstance(string_data, dict) and isinstance(string_data.get(key), str):
        return str(string_data[key])
    raise BrokerUnavailable(f"Secret {where} has no key {key!r}")


@dataclass
class _Open:
    key: tuple[tuple[str, str], ...]
    transport: transports.Admin


class QueueAdmin:
    """Queue operations on the configured transports, for the operator's own use."""

    def __init__(
        self,
        config: OperatorConfig,
        client: kube.Client | None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.client = client
        self.timeout = timeout
        self._open: dict[str, _Open] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def environ(self, name: str, transport: TransportConfig) -> dict[str, str]:
        """Every variable the transport module reads, Secret values included (as in the pods,
        a Secret, when named, carries the rabbitmq URL with its password)."""
        result: dict[str, str] = {}
        for variable in transport_env.variables(transport):
            if variable.identity:
                continue  # the operator's own cloud identity, not the pods' (module docstring)
            value = variable.value
            if isinstance(value, transport_env.FromSecret):
                result[variable.name] = await self._secret(value.secret, value.key)
            else:
                result[variable.name] = value
        return result

    async def _secret(self, name: str, key: str) -> str:
        namespace = self.config.operator_namespace
        where = f"{namespace}/{name}"
        if self.client is None:
            raise BrokerUnavailable(f"cannot read Secret {where}: no Kubernetes API client")
        try:
            secret = await self.client.get(kube.SECRETS, namespace, name)
        except kube.NotFound:
            raise BrokerUnavailable(
                f"Secret {where} does not exist (the operator reads transport credentials "
                f"from its own namespace {namespace!r})"
            ) from None
        except kube.ApiError as exc:
            raise BrokerUnavailable(f"cannot read Secret {where}: {exc}") from exc
        return secret_value(secret, key, where)

    async def _transport(self, name: str, transport: TransportConfig) -> transports.Admin:
        environ = await self.environ(name, transport)
        key = tuple(sorted(environ.items()))
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            current = self._open.get(name)
            if current is not None and current.key == key:
                return current.transport
            if current is not None:
                del self._open[name]
                await _close_quietly(current.transport)
            try:
                created = transports.create(transport.type, environ)
            except (ValueError, ImportError) as exc:
                raise QueueAdminError(f"cannot configure transport {name!r}: {exc}") from exc
            try:
                async with asyncio.timeout(self.timeout):
                    await created.__aenter__()
            except TimeoutError:
                await _close_quietly(created)
                raise BrokerUnavailable(
                    f"transport {name!r} did not connect within {self.timeout:g}s"
                ) from None
            except transports.TransportUnavailable as exc:
                await _close_quietly(created)
                raise BrokerUnavailable(str(exc)) from exc
            except transports.TransportError as exc:
                await _close_quietly(created)
                raise QueueAdminError(str(exc)) from exc
            self._open[name] = _Open(key, created)
            return created

    async def _run(
        self,
        name: str,
        transport: TransportConfig,
        what: str,
        call: Callable[[transports.Admin], Awaitable[T]],
    ) -> T:
        opened = await self._transport(name, transport)
        try:
            async with asyncio.timeout(self.timeout):
                return await call(opened)
        except TimeoutError:
            await self._drop(name, opened)
            raise BrokerUnavailable(
                f"transport {name!r} did not {what} within {self.timeout:g}s"
            ) from None
        except transports.TransportUnavailable as exc:
            await self._drop(name, opened)
            raise BrokerUnavailable(str(exc)) from exc

    async def _drop(self, name: str, opened: transports.Admin) -> None:
        current = self._open.get(name)
        if current is not None and current.transport is opened:
            del self._open[name]
        await _close_quietly(opened)

    async def ensure(self, name: str, transport: TransportConfig, queue: str) -> None:
        """Create the queue (and the dead-letter queue where the broker has one)."""
        try:
            names.check_queue_name(queue, transport.type)
        except names.InvalidName as exc:
            raise QueueAdminError(str(exc)) from exc

        async def ensure_queue(opened: transports.Admin) -> None:
            try:
                await opened.ensure_queue(queue)
            except (transports.QueueNotFound, transports.Unsupported, ValueError) as exc:
                raise QueueAdminError(str(exc)) from exc
            except transports.TransportUnavailable:
                raise
            except transports.TransportError as exc:
                raise QueueAdminError(str(exc)) from exc

        await self._run(name, transport, "create the queue", ensure_queue)

    async def delete(self, name: str, transport: TransportConfig, queue: str) -> None:
        """Delete the queue and its messages; a missing queue is fine."""

        async def delete_queue(opened: transports.Admin) -> None:
            try:
                await opened.delete_queue(queue)
            except transports.TransportUnavailable:
                raise
            except (transports.TransportError, ValueError) as exc:
                raise QueueAdminError(str(exc)) from exc

        await self._run(name, transport, "delete the queue", delete_queue)

    async def depth(self, name: str, transport: TransportConfig, queue: str) -> int | None:
        """Messages waiting; None when the broker cannot count them (Pub/Sub).

        Raises QueueGone when the queue does not exist."""

        async def queue_depth(opened: transports.Admin) -> int | None:
            try:
                return await opened.queue_depth(queue)
            except transports.Unsupported:
                return None
            except transports.QueueNotFound as exc:
                raise QueueGone(queue) from exc
            except transports.TransportUnavailable:
                raise
            except (transports.TransportError, ValueError) as exc:
                raise QueueAdminError(str(exc)) from exc

        return await self._run(name, transport, "read the queue depth", queue_depth)

    async def aclose(self) -> None:
        opened, self._open = list(self._open.values()), {}
        for item in opened:
            await _close_quietly(item.transport)


async def _close_quietly(transport: transports.Admin) -> None:
    with contextlib.suppress(Exception):
        await transport.close()
