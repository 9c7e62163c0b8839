"""`asya_callers.http.Post.handle`: POST part of the payload as JSON to any HTTP service.

For servers that speak neither the OpenAI API nor the Open Inference Protocol: Ray Serve,
BentoML, Mosec, or a service of your own.

    ASYA_HTTP_URL           required: where to POST, e.g. http://ray-serve:8000/classify
    ASYA_HTTP_BODY_FIELD    payload field sent as the body (default: the whole payload)
    ASYA_HTTP_OUTPUT_FIELD  payload field the answer is stored in (default: response);
                            "." makes the answer the new payload
    ASYA_HTTP_TIMEOUT       seconds or a duration per request (default 60s)
    ASYA_HTTP_HEADERS       extra request headers, a JSON object of strings
    ASYA_HTTP_BEARER_TOKEN  sent as `Authorization: Bearer ...` (from a Secret; never logged)

An answer that is not JSON is stored as a string. Failures raise asya_callers.errors.
"""

from __future__ import annotations

from typing import Any

from asya_callers.client import ModelClient
from asya_callers.errors import ConfigError
from asya_callers.payloads import require_field, require_object
from asya_callers.settings import Settings

__all__ = ["Post"]

WHOLE_PAYLOAD = "."
CALLER = "asya_callers.http.Post"


class Post:
    def __init__(self) -> None:
        settings = Settings("ASYA_HTTP_")
        self.url = settings.url("URL", "the service to POST to, e.g. http://ray-serve:8000/")
        self.body_field = settings.text("BODY_FIELD", WHOLE_PAYLOAD) or WHOLE_PAYLOAD
        self.output_field = settings.text("OUTPUT_FIELD", "response") or "response"
        headers = settings.json("HEADERS") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ConfigError(
                f"{settings.name('HEADERS')} must be a JSON object of strings, "
                'e.g. {"X-Tenant": "acme"}'
            )
        token = settings.text("BEARER_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = ModelClient(
            timeout=settings.duration("TIMEOUT", 60.0),
            headers=headers,
            secrets=[token or "", *(v for k, v in headers.items() if _looks_secret(k))],
        )

    async def handle(self, payload: Any) -> Any:
        if self.body_field == WHOLE_PAYLOAD:
            body = payload
        else:
            body = require_field(
                require_object(payload, CALLER), self.body_field, CALLER,
                "ASYA_HTTP_BODY_FIELD names it as the request body",
            )  # fmt: skip
        answer = await self.client.post_json(self.url, body, json_only=False)
        if self.output_field == WHOLE_PAYLOAD:
            return answer
        return {**require_object(payload, CALLER), self.output_field: answer}


def _looks_secret(header: str) -> bool:
    name = header.lower()
    return name == "authorization" or any(w in name for w in ("key", "token", "secret"))
