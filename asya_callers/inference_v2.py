"""`asya_callers.inference_v2.Infer.handle`: one Open Inference Protocol (KServe V2) call.

POSTs payload fields as input tensors to `{base}/v2/models/{model}[/versions/{v}]/infer` on
any V2 server (Seldon MLServer, NVIDIA Triton, KServe runtimes) and adds the output tensors
to the payload.

    ASYA_V2_BASE_URL       required: the server, e.g. http://mlserver:8080
    ASYA_V2_MODEL          required: the model name
    ASYA_V2_VERSION        the model version (default: the server's default version)
    ASYA_V2_INPUTS         required: the payload fields sent as input tensors, either
                             features                     one tensor named like the field
                             features:FP32,mask:BOOL      with their datatypes
                           or a JSON list of objects (only "field" is required):
                             [{"field": "pixels", "name": "input__0", "datatype": "FP32",
                               "shape": [-1, 784]}]
    ASYA_V2_OUTPUTS        comma-separated output names to request (default: the model's)
    ASYA_V2_OUTPUT_FIELD   payload field the outputs are stored in (default: outputs)
    ASYA_V2_TIMEOUT        seconds or a duration per request (default 60s)
    ASYA_V2_READY_TIMEOUT  how long to wait at start for GET /v2/health/ready (default 60s)
    ASYA_V2_API_KEY        sent as `Authorization: Bearer ...` (from a Secret; never logged)

A tensor's shape comes from the nesting of the JSON value (a single value is shape [1]) and
its datatype from its values (booleans BOOL, whole numbers INT64, other numbers FP64,
strings BYTES), unless ASYA_V2_INPUTS gives them; `data` is sent flattened, row-major.

The result is the payload plus one object keyed by output name:

    {"outputs": {"predict": {"data": [[0], [2]], "shape": [2, 1], "datatype": "INT64"}}}

where `data` is nested as the output's shape says.

At start the caller waits until the server answers GET /v2/health/ready, so an actor does
not take envelopes while its server is still loading; if it never does, the runtime exits
at start saying so. The model itself is not checked then: an unknown model or version fails
each call as BadRequest (HTTP 404), which retry rules for Transient never retry.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from asya_callers.client import ModelClient
from asya_callers.errors import ConfigError, InvalidInput, ServerError
from asya_callers.payloads import require_field, require_object
from asya_callers.settings import Settings, redact_url

__all__ = [
    "DATATYPES",
    "Infer",
    "InputSpec",
    "build_tensor",
    "check_values",
    "flatten",
    "infer_datatype",
    "infer_shape",
    "infer_url",
    "parse_inputs",
    "read_outputs",
    "reshape",
    "resolve_shape",
    "wait_ready",
]

CALLER = "asya_callers.inference_v2.Infer"
INPUTS_VARIABLE = "ASYA_V2_INPUTS"
INPUTS_EXAMPLE = (
    'e.g. "features" or "features:FP32,mask:BOOL", or a JSON list such as '
    '[{"field": "features", "name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]'
)
INPUT_KEYS = ("field", "name", "datatype", "shape")
# Between two readiness probes at start: quick enough not to delay a server that is up.
READY_INTERVAL_S = 0.5
READY_PROBE_TIMEOUT_S = 5.0

# The ranges a JSON number must fall in to be sent as each V2 datatype.
_INT_RANGES = {
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
}
_FLOAT_LIMITS = {"FP16": 65504.0, "FP32": 3.4028234663852886e38, "FP64": math.inf}
DATATYPES = ("BOOL", *_INT_RANGES, *_FLOAT_LIMITS, "BYTES")


@dataclass(frozen=True)
class InputSpec:
    """One input tensor: the payload field it is read from and what ASYA_V2_INPUTS fixed."""

    field: str
    name: str
    datatype: str | None = None
    shape: tuple[int, ...] | None = None


class Infer:
    def __init__(self) -> None:
        settings = Settings("ASYA_V2_")
        self.base_url = settings.url("BASE_URL", "the V2 server, e.g. http://mlserver:8080")
        model = settings.required("MODEL", "the name of the model to call, e.g. iris")
        self.url = infer_url(self.base_url, model, settings.text("VERSION"))
        inputs = settings.required("INPUTS", f"the payload fields to send, {INPUTS_EXAMPLE}")
        self.inputs = parse_inputs(inputs, INPUTS_VARIABLE)
        self.outputs = _output_names(settings.text("OUTPUTS"), settings.name("OUTPUTS"))
        self.output_field = settings.text("OUTPUT_FIELD", "outputs") or "outputs"
        api_key = settings.text("API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = ModelClient(
            timeout=settings.duration("TIMEOUT", 60.0), headers=headers, secrets=[api_key or ""]
        )
        wait_ready(self.base_url, settings.duration("READY_TIMEOUT", 60.0), self.client)

    async def handle(self, payload: Any) -> dict[str, Any]:
        fields = require_object(payload, CALLER)
        meaning = f"{INPUTS_VARIABLE} names it as an input tensor"
        tensors = [
            build_tensor(spec, require_field(fields, spec.field, CALLER, meaning))
            for spec in self.inputs
        ]
        body: dict[str, Any] = {"inputs": tensors}
        if self.outputs:
            body["outputs"] = [{"name": name} for name in self.outputs]
        answer = await self.client.post_json(self.url, body)
        outputs = read_outputs(answer, self.url, requested=self.outputs)
        return {**fields, self.output_field: outputs}


def infer_url(base_url: str, model: str, version: str | None) -> str:
    """The infer endpoint; names are quoted so that a `/` in one cannot change the path."""
    path = f"/v2/models/{urllib.parse.quote(model, safe='')}"
    if version:
        path += f"/versions/{urllib.parse.quote(version, safe='')}"
    return f"{base_url.rstrip('/')}{path}/infer"


def wait_ready(base_url: str, timeout: float, client: ModelClient) -> None:
    """Poll GET {base}/v2/health/ready until it answers 200; ConfigError after `timeout`."""
    url = f"{base_url.rstrip('/')}/v2/health/ready"
    started = time.monotonic()
    deadline = started + timeout
    last = "no answer yet"
    with httpx.Client(headers=client.headers) as probe:
        while True:
            remaining = deadline - time.monotonic()
            try:
                response = probe.get(url, timeout=max(0.1, min(READY_PROBE_TIMEOUT_S, remaining)))
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200].strip()}"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(READY_INTERVAL_S, remaining))
    waited = time.monotonic() - started
    raise ConfigError(
        f"the V2 server at {redact_url(url)} was not ready after waiting {waited:.1f}s "
        f"(ASYA_V2_READY_TIMEOUT={timeout:g}s); last answer: {client.scrub(last)}. Check "
        "ASYA_V2_BASE_URL and that the server is running, or raise ASYA_V2_READY_TIMEOUT if "
        "it takes longer to load"
    )


# -- ASYA_V2_INPUTS ------------------------------------------------------------------------


def parse_inputs(raw: str, variable: str) -> list[InputSpec]:
    """Either `field[:DATATYPE],...` or a JSON list of {"field", "name", "datatype", "shape"}."""
    text = raw.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{variable} is not valid JSON ({exc}); {INPUTS_EXAMPLE}") from None
        specs = [_spec_from_object(item, i, variable) for i, item in enumerate(items)]
    else:
        specs = [_spec_from_text(part, variable) for part in text.split(",")]
    if not specs:
        raise ConfigError(f"{variable} names no input; {INPUTS_EXAMPLE}")
    names = [spec.name for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"{variable} names the tensor(s) {', '.join(map(repr, duplicates))} more than once; "
            "each input tensor needs its own name"
        )
    return specs


def _spec_from_text(part: str, variable: str) -> InputSpec:
    field, colon, datatype = (p.strip() for p in part.partition(":"))
    if not field:
        raise ConfigError(f"{variable} has an empty entry in {part!r}; {INPUTS_EXAMPLE}")
    if colon:
        return InputSpec(field, field, _datatype(datatype, f"{variable} ({field!r})"))
    return InputSpec(field, field)


def _spec_from_object(item: Any, index: int, variable: str) -> InputSpec:
    where = f"{variable}[{index}]"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} is not an object; {INPUTS_EXAMPLE}")
    unknown = sorted(set(item) - set(INPUT_KEYS))
    if unknown:
        raise ConfigError(
            f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; the keys are "
            f"{', '.join(INPUT_KEYS)}"
        )
    field = item.get("field")
    if not isinstance(field, str) or not field:
        raise ConfigError(f'{where} needs "field": the payload field to send; {INPUTS_EXAMPLE}')
    name = item.get("name", field)
    if not isinstance(name, str) or not name:
        raise ConfigError(f'{where}: "name" must be a non-empty string (the tensor name)')
    datatype = item.get("datatype")
    if datatype is not None:
        if not isinstance(datatype, str):
            raise ConfigError(f'{where}: "datatype" must be a string, one of {_listing()}')
        datatype = _datatype(datatype, where)
    shape = item.get("shape")
    if shape is not None:
        shape = _shape(shape, where)
    return InputSpec(field, name, datatype, shape)


def _datatype(text: str, where: str) -> str:
    datatype = text.strip().upper()
    if datatype not in DATATYPES:
        raise ConfigError(
            f"{where}: {text!r} is not a V2 datatype; use one of {_listing()}"
        )  # fmt: skip
    return datatype


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in value
    ):
        raise ConfigError(
            f'{where}: "shape" must be a list of sizes (whole numbers >= 0, or -1 once for '
            f"the size to work out from the data), e.g. [-1, 4]; got {json.dumps(value)}"
        )
    if value.count(-1) > 1:
        raise ConfigError(f'{where}: "shape" {value} may hold -1 only once')
    return tuple(value)


def _listing() -> str:
    return ", ".join(DATATYPES)


def _output_names(raw: str | None, variable: str) -> list[str]:
    if raw is None:
        return []
    names = [name.strip() for name in raw.split(",")]
    if not all(names):
        raise ConfigError(
            f"{variable}={raw!r} has an empty name; list output names with commas, "
            "e.g. predict,predict_proba"
        )
    return names


# -- Tensors -------------------------------------------------------------------------------


def build_tensor(spec: InputSpec, value: Any) -> dict[str, Any]:
    """The V2 input tensor for one payload field's value."""
    nesting = _nesting(value, spec.field, "")
    data = flatten(value)
    datatype = spec.datatype or infer_datatype(data, spec.field, nesting)
    data = check_values(data, datatype, spec.field, nesting)
    shape = nesting or [1]
    if spec.shape is not None:
        shape = resolve_shape(spec.shape, len(data), spec.field, shape)
    return {"name": spec.name, "shape": shape, "datatype": datatype, "data": data}


def infer_shape(value: Any, field: str) -> list[int]:
    """The shape of a JSON value's nesting: a single value is [1]; ragged lists are refused."""
    return _nesting(value, field, "") or [1]


def _nesting(value: Any, field: str, path: str) -> list[int]:
    """The sizes of the nested lists in `value` ([] for a single value)."""
    if not isinstance(value, list):
        return []
    if not value:
        return [0]
    first = _nesting(value[0], field, f"{path}[0]")
    for i in range(1, len(value)):
        other = _nesting(value[i], field, f"{path}[{i}]")
        if other != first:
            raise InvalidInput(
                f"{CALLER}: payload field {field!r} is ragged: {field}{path}[{i}] "
                f"{_describe(other)} but {field}{path}[0] {_describe(first)}; every row of a "
                "tensor must have the same length"
            )
    return [len(value), *first]


def _describe(shape: list[int]) -> str:
    if not shape:
        return "is a single value"
    if len(shape) == 1:
        return f"has {shape[0]} item(s)"
    return f"has shape {shape}"


def flatten(value: Any) -> list[Any]:
    """The values of a nested list in row-major order (a single value becomes [value])."""
    if not isinstance(value, list):
        return [value]
    flat: list[Any] = []
    stack: list[Any] = [iter(value)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def infer_datatype(data: list[Any], field: str, nesting: list[int]) -> str:
    """BOOL, INT64, FP64 or BYTES from the values; a mix (or nothing to go by) is refused.

    `nesting` is the value's shape ([] for a single value), used to say where a value is.
    """
    if not data:
        raise InvalidInput(
            f"{CALLER}: payload field {field!r} is empty, so its datatype cannot be told from "
            f"its values; give it in {INPUTS_VARIABLE}, e.g. {field}:FP32"
        )
    first_of: dict[str, int] = {}  # kind -> where it first occurs
    fractional = False
    for i, item in enumerate(data):
        kind = _kind(item, field, i, nesting)
        first_of.setdefault(kind, i)
        fractional = fractional or isinstance(item, float)
    if len(first_of) > 1:
        (a, i), (b, j) = sorted(first_of.items(), key=lambda kv: kv[1])[:2]
        raise InvalidInput(
            f"{CALLER}: payload field {field!r} mixes kinds of value: "
            f"{_position(field, i, nesting)} is a {a} but {_position(field, j, nesting)} is a "
            f"{b}; a tensor holds one datatype (convert the values, or name a datatype in "
            f"{INPUTS_VARIABLE})"
        )
    kind = next(iter(first_of))
    if kind == "number":
        return "FP64" if fractional else "INT64"
    return "BOOL" if kind == "boolean" else "BYTES"


def _kind(item: Any, field: str, index: int, nesting: list[int]) -> str:
    if isinstance(item, bool):
        return "boolean"
    if isinstance(item, int | float):
        return "number"
    if isinstance(item, str):
        return "string"
    raise InvalidInput(
        f"{CALLER}: {_position(field, index, nesting)} is {_json_kind(item)}; a tensor holds "
        "only booleans, numbers or strings"
    )


def _json_kind(item: Any) -> str:
    if item is None:
        return "null"
    if isinstance(item, dict):
        return "an object"
    return f"a {type(item).__name__}"


def _position(field: str, index: int, nesting: list[int]) -> str:
    """`field[i][j]` for the `index`-th value, in row-major order, of a value so nested."""
    if not nesting:
        return f"payload field {field!r}"
    indices = []
    for size in reversed(nesting):
        index, rest = divmod(index, size)
        indices.append(rest)
    return field + "".join(f"[{i}]" for i in reversed(indices))


def check_values(data: list[Any], datatype: str, field: str, nesting: list[int]) -> list[Any]:
    """`data` as it is sent for `datatype`; a value the datatype cannot hold is refused."""
    checked: list[Any] = []
    for i, item in enumerate(data):
        value, problem = _fit(item, datatype)
        if problem is not None:
            raise InvalidInput(
                f"{CALLER}: {_position(field, i, nesting)} = {_show(item)} {problem}"
            )  # fmt: skip
        checked.append(value)
    return checked


def _fit(item: Any, datatype: str) -> tuple[Any, str | None]:
    """(the value to send, None) if `item` fits `datatype`, else (item, why it does not)."""
    if datatype == "BOOL":
        if isinstance(item, bool):
            return item, None
        return item, "is not a boolean (BOOL takes true or false)"
    if datatype == "BYTES":
        if isinstance(item, str):
            return item, None
        return item, "is not a string (BYTES takes strings)"
    if isinstance(item, bool) or not isinstance(item, int | float):
        return item, f"is not a number ({datatype} takes numbers)"
    if not math.isfinite(item):
        return item, "is not a finite number (JSON cannot carry NaN or infinity)"
    if datatype in _INT_RANGES:
        if isinstance(item, float):
            if not item.is_integer():
                return item, f"is not a whole number ({datatype} takes whole numbers)"
            item = int(item)  # 2.0 from a producer that writes every number as a float
        low, high = _INT_RANGES[datatype]
        if not low <= item <= high:
            return item, f"is outside the range of {datatype} ({low}..{high})"
        return item, None
    limit = _FLOAT_LIMITS[datatype]
    if abs(item) > limit:
        return item, f"is too large for {datatype} (at most {limit:g})"
    return item, None


def _show(item: Any) -> str:
    text = json.dumps(item, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


def resolve_shape(
    declared: tuple[int, ...], count: int, field: str, nested: list[int]
) -> list[int]:
    """The declared shape with its -1 worked out; refused when it cannot hold `count` values."""
    known = math.prod(d for d in declared if d != -1)
    shape = list(declared)
    if -1 in declared:
        if known == 0 or count % known:
            raise InvalidInput(
                f"{CALLER}: payload field {field!r} has {count} value(s) (shape {nested}), "
                f"which the shape {list(declared)} from {INPUTS_VARIABLE} cannot hold: "
                f"{count} is not a multiple of {known}"
            )
        shape[declared.index(-1)] = count // known
    elif known != count:
        raise InvalidInput(
            f"{CALLER}: payload field {field!r} has {count} value(s) (shape {nested}), but the "
            f"shape {list(declared)} from {INPUTS_VARIABLE} holds {known}"
        )
    return shape


# -- Outputs -------------------------------------------------------------------------------


def read_outputs(answer: Any, url: str, requested: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """The answer's output tensors by name, each {"data" (nested), "shape", "datatype"}."""
    where = f"POST {redact_url(url)}"
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if not isinstance(outputs, list):
        raise ServerError(f'{where}: the answer has no "outputs" list: {_show(answer)}')
    found: dict[str, dict[str, Any]] = {}
    for i, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise ServerError(f"{where}: outputs[{i}] is not a named tensor: {_show(output)}")
        name = output["name"]
        shape = output.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise ServerError(f"{where}: output {name!r} has no valid shape: {_show(shape)}")
        # The protocol lets a server send tensor data flat or nested; both are read here.
        data = flatten(output.get("data"))
        if len(data) != math.prod(shape):
            raise ServerError(
                f"{where}: output {name!r} has {len(data)} value(s) but its shape {shape} "
                f"holds {math.prod(shape)}"
            )
        found[name] = {
            "data": reshape(data, shape),
            "shape": shape,
            "datatype": output.get("datatype"),
        }
    missing = [name for name in requested if name not in found]
    if missing:
        raise ServerError(
            f"{where}: the answer lacks the requested output(s) {', '.join(map(repr, missing))}; "
            f"it has {', '.join(map(repr, found)) or 'none'}"
        )
    return found


def reshape(data: list[Any], shape: list[int]) -> Any:
    """Row-major `data` as nested lists of `shape` (shape [] is the single value itself)."""
    if len(data) != math.prod(shape):
        raise ValueError(f"{len(data)} value(s) do not fill the shape {shape}")
    if not shape:
        return data[0]
    nested: list[Any] = list(data)
    for size in reversed(shape[1:]):
        nested = [nested[i : i + size] for i in range(0, len(nested), size)] if size else []
    if len(nested) != shape[0]:
        # A zero-sized inner dimension left nothing to group: rebuild the empty rows.
        nested = _empty(shape)
    return nested


def _empty(shape: list[int]) -> Any:
    if len(shape) == 1:
        return []
    return [_empty(shape[1:]) for _ in range(shape[0])]
