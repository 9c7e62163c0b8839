"""JSON for the hot path: orjson when installed (the `fast` extra), the standard library else.

Both produce the same bytes for what envelopes hold (compact separators, UTF-8 rather than
\\u escapes). Where orjson is stricter than the standard library (NaN, lone surrogates,
non-string keys, UTF-16 input), the standard library decides, so a message is accepted or
refused exactly as it would be without orjson. orjson reads an integer beyond 64 bits as a
float, silently losing digits; a body with a run of 19 or more digits therefore goes to the
standard library, which keeps every digit.
"""

from __future__ import annotations

import json
import re
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    orjson = None  # type: ignore[assignment]

FAST = orjson is not None

# Long enough to hold an integer orjson would turn into a float (beyond 2**64 - 1 has 20
# digits; 19 leaves a margin). Searching 1 KB for it costs far less than parsing it.
_LONG_DIGITS = re.compile(rb"\d{19}")


def loads(data: bytes) -> Any:
    """Parse JSON; raises ValueError (or UnicodeDecodeError) as json.loads does."""
    if orjson is not None and not _LONG_DIGITS.search(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # maybe valid for the standard library (big integers, NaN): let it decide
    return json.loads(data)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; raises TypeError/ValueError/UnicodeEncodeError as json would."""
    if orjson is not None:
        try:
            return orjson.dumps(value)
        except TypeError:
            pass  # something orjson refuses but json may write (big integers, int keys)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
