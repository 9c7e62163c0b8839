"""asya_callers.inference_v2 without a server: ASYA_V2_INPUTS, tensors in, tensors out."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asya_callers.errors import ConfigError, InvalidInput, ServerError
from asya_callers.inference_v2 import (
    DATATYPES,
    Infer,
    InputSpec,
    build_tensor,
    check_values,
    flatten,
    infer_datatype,
    infer_shape,
    infer_url,
    parse_inputs,
    read_outputs,
    reshape,
    resolve_shape,
)

VAR = "ASYA_V2_INPUTS"

# -- ASYA_V2_INPUTS ------------------------------------------------------------------------


def test_the_list_form_names_fields_with_optional_datatypes() -> None:
    assert parse_inputs("features", VAR) == [InputSpec("features", "features")]
    assert parse_inputs(" features:fp32 , mask:BOOL ", VAR) == [
        InputSpec("features", "features", "FP32"),
        InputSpec("mask", "mask", "BOOL"),
    ]


def test_the_json_form_takes_name_datatype_and_shape() -> None:
    raw = '[{"field": "pixels", "name": "input__0", "datatype": "FP32", "shape": [-1, 4]},'
    raw += ' {"field": "mask"}]'

    assert parse_inputs(raw, VAR) == [
        InputSpec("pixels", "input__0", "FP32", (-1, 4)),
        InputSpec("mask", "mask"),
    ]


def test_an_unknown_datatype_lists_every_v2_datatype() -> None:
    with pytest.raises(ConfigError) as info:
        parse_inputs("features:FLOAT", VAR)

    message = str(info.value)
    assert "ASYA_V2_INPUTS ('features'): 'FLOAT' is not a V2 datatype" in message
    for datatype in ("BOOL", "UINT8", "UINT64", "INT8", "INT64", "FP16", "FP32", "FP64", "BYTES"):
        assert datatype in message
    assert len(DATATYPES) == 13


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("features,,mask", r"empty entry.*e\.g\. \"features\""),
        (":FP32", "empty entry"),
        ("[{]", r"ASYA_V2_INPUTS is not valid JSON.*e\.g\."),
        ("[]", "names no input"),
        ('["features"]', r"ASYA_V2_INPUTS\[0\] is not an object"),
        ('[{"name": "x"}]', r"ASYA_V2_INPUTS\[0\] needs \"field\""),
        ('[{"field": "x", "dtype": "FP32"}]', r"unknown key\(s\) 'dtype'; the keys are field"),
        ('[{"field": "x", "datatype": "FP8"}]', r"ASYA_V2_INPUTS\[0\]: 'FP8' is not a V2"),
        ('[{"field": "x", "shape": [-1, -1]}]', "may hold -1 only once"),
        ('[{"field": "x", "shape": "3x4"}]', r"\"shape\" must be a list of sizes.*\[-1, 4\]"),
        ('[{"field": "x", "shape": [2, -3]}]', "must be a list of sizes"),
        ('[{"field": "x", "name": ""}]', "must be a non-empty string"),
        ("a,a:FP32", r"names the tensor\(s\) 'a' more than once"),
        ('[{"field": "a", "name": "t"}, {"field": "b", "name": "t"}]', "'t' more than once"),
    ],
)
def test_bad_inputs_settings_say_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_inputs(raw, VAR)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "ASYA_V2_BASE_URL is required"),
        ({"ASYA_V2_BASE_URL": "http://h"}, "ASYA_V2_MODEL is required"),
        ({"ASYA_V2_BASE_URL": "http://h", "ASYA_V2_MODEL": "m"}, "ASYA_V2_INPUTS is required"),
        (
            {"ASYA_V2_BASE_URL": "http://h", "ASYA_V2_MODEL": "m", "ASYA_V2_INPUTS": "x:INT"},
            "'INT' is not a V2 datatype",
        ),
        (
            {
                "ASYA_V2_BASE_URL": "http://h",
                "ASYA_V2_MODEL": "m",
                "ASYA_V2_INPUTS": "x",
                "ASYA_V2_OUTPUTS": "predict,,proba",
            },
            "ASYA_V2_OUTPUTS='predict,,proba' has an empty name",
        ),
        (
            {
                "ASYA_V2_BASE_URL": "http://h",
                "ASYA_V2_MODEL": "m",
                "ASYA_V2_INPUTS": "x",
                "ASYA_V2_READY_TIMEOUT": "later",
            },
            "ASYA_V2_READY_TIMEOUT='later' is not a duration",
        ),
    ],
)
def test_bad_settings_stop_the_caller_before_it_contacts_the_server(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name in ("BASE_URL", "MODEL", "VERSION", "INPUTS", "OUTPUTS", "READY_TIMEOUT"):
        monkeypatch.delenv(f"ASYA_V2_{name}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    # http://h does not resolve: had the caller got as far as its readiness probe, the
    # message would be about that instead.
    with pytest.raises(ConfigError, match=message):
        Infer()


def test_the_url_carries_the_version_and_quotes_the_names() -> None:
    assert infer_url("http://s:8080/", "iris", None) == "http://s:8080/v2/models/iris/infer"
    assert infer_url("http://s", "iris", "3") == "http://s/v2/models/iris/versions/3/infer"
    assert (
        infer_url("http://s", "a/b c", "v 1") == "http://s/v2/models/a%2Fb%20c/versions/v%201/infer"
    )


# -- Shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shape"),
    [
        (5.1, [1]),
        ("a sentence", [1]),
        ([1, 2, 3, 4], [4]),
        ([[1, 2], [3, 4], [5, 6]], [3, 2]),
        ([[[1], [2]], [[3], [4]]], [2, 2, 1]),
        ([], [0]),
        ([[], []], [2, 0]),
    ],
)
def test_the_shape_is_the_nesting_of_the_lists(value: Any, shape: list[int]) -> None:
    assert infer_shape(value, "x") == shape


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ([[1, 2], [3]], r"x\[1\] has 1 item\(s\) but x\[0\] has 2"),
        ([1, [2]], r"x\[1\] has 1 item\(s\) but x\[0\] is a single value"),
        ([[[1], [2]], [[3], [4, 5]]], r"x\[1\]\[1\] has 2 item\(s\) but x\[1\]\[0\] has 1"),
        ([[[1], [2]], [[3]]], r"x\[1\] has shape \[1, 1\] but x\[0\] has shape \[2, 1\]"),
    ],
)
def test_ragged_lists_are_refused_naming_the_field_and_where(value: Any, where: str) -> None:
    with pytest.raises(InvalidInput, match=rf"payload field 'x' is ragged: {where}"):
        infer_shape(value, "x")


def test_flattening_is_row_major() -> None:
    assert flatten([[[1, 2], [3, 4]], [[5, 6], [7, 8]]]) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert flatten(["a", "b"]) == ["a", "b"]
    assert flatten(True) == [True]
    assert flatten([[], []]) == []


def test_a_declared_shape_resolves_its_minus_one() -> None:
    assert resolve_shape((-1, 4), 12, "x", [12]) == [3, 4]
    assert resolve_shape((2, -1, 2), 12, "x", [12]) == [2, 3, 2]
    assert resolve_shape((3, 4), 12, "x", [2, 6]) == [3, 4]
    assert resolve_shape((-1, 4), 0, "x", [0]) == [0, 4]


@pytest.mark.parametrize(
    ("declared", "count", "message"),
    [
        ((3, 4), 11, r"'x' has 11 value\(s\) \(shape \[11\]\), but the shape \[3, 4\] .* holds 12"),
        ((-1, 4), 7, r"cannot hold: 7 is not a multiple of 4"),
        ((-1, 0), 3, r"cannot hold: 3 is not a multiple of 0"),
    ],
)
def test_a_declared_shape_must_hold_the_values(
    declared: tuple[int, ...], count: int, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        resolve_shape(declared, count, "x", [count])


# -- Datatypes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "datatype"),
    [
        ([True, False], "BOOL"),
        ([1, -2, 3], "INT64"),
        ([1, 2.5], "FP64"),
        ([0.5], "FP64"),
        (["a", "b"], "BYTES"),
    ],
)
def test_the_datatype_is_read_off_the_values(data: list[Any], datatype: str) -> None:
    assert infer_datatype(data, "x", [len(data)]) == datatype


@pytest.mark.parametrize(
    ("data", "nesting", "message"),
    [
        ([1, True], [2], r"x\[0\] is a number but x\[1\] is a boolean"),
        ([1.5, 2, 3, "4"], [2, 2], r"x\[0\]\[0\] is a number but x\[1\]\[1\] is a string"),
        ([1, None], [2], r"x\[1\] is null; a tensor holds only booleans, numbers or strings"),
        ([{"a": 1}], [1], r"x\[0\] is an object"),
        ([None], [], r"payload field 'x' is null"),
        ([], [0], r"'x' is empty, so its datatype cannot .* e\.g\. x:FP32"),
    ],
)
def test_values_that_give_no_single_datatype_are_refused(
    data: list[Any], nesting: list[int], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        infer_datatype(data, "x", nesting)


@pytest.mark.parametrize(
    ("data", "datatype", "sent"),
    [
        ([1, 2.5], "FP32", [1, 2.5]),
        ([2.0, -3], "INT8", [2, -3]),
        ([255, 0], "UINT8", [255, 0]),
        ([2**64 - 1], "UINT64", [2**64 - 1]),
        ([True], "BOOL", [True]),
        (["é"], "BYTES", ["é"]),
        ([65504.0], "FP16", [65504.0]),
    ],
)
def test_values_that_fit_the_datatype_are_sent(
    data: list[Any], datatype: str, sent: list[Any]
) -> None:
    checked = check_values(data, datatype, "x", [len(data)])

    assert checked == sent
    assert [type(v) for v in checked] == [type(v) for v in sent]


@pytest.mark.parametrize(
    ("data", "datatype", "message"),
    [
        (["5.1"], "FP32", r'x\[0\] = "5.1" is not a number \(FP32 takes numbers\)'),
        ([True], "FP64", "is not a number"),
        ([1.5], "INT32", r"x\[0\] = 1.5 is not a whole number \(INT32 takes whole numbers\)"),
        ([256], "UINT8", r"x\[0\] = 256 is outside the range of UINT8 \(0..255\)"),
        ([-1], "UINT32", "outside the range of UINT32"),
        ([2**63], "INT64", "outside the range of INT64"),
        ([1], "BOOL", r"x\[0\] = 1 is not a boolean"),
        ([1], "BYTES", "is not a string"),
        ([70000], "FP16", "is too large for FP16"),
        ([float("nan")], "FP64", "is not a finite number"),
        ([float("inf")], "INT64", "is not a finite number"),
    ],
)
def test_values_the_datatype_cannot_hold_are_refused(
    data: list[Any], datatype: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_values(data, datatype, "x", [len(data)])


# -- Whole tensors -------------------------------------------------------------------------


def test_a_tensor_is_sent_flat_with_its_inferred_shape_and_datatype() -> None:
    tensor = build_tensor(InputSpec("rows", "rows"), [[5.1, 3.5], [7, 3.2]])

    assert tensor == {
        "name": "rows",
        "shape": [2, 2],
        "datatype": "FP64",
        "data": [5.1, 3.5, 7, 3.2],
    }


def test_strings_become_a_bytes_tensor_and_booleans_a_bool_tensor() -> None:
    words = build_tensor(InputSpec("words", "text"), [["a", "b"], ["c", "d"]])
    mask = build_tensor(InputSpec("mask", "mask"), [True, False, True])
    single = build_tensor(InputSpec("word", "word"), "hello")

    assert words == {"name": "text", "shape": [2, 2], "datatype": "BYTES", "data": list("abcd")}
    assert mask == {"name": "mask", "shape": [3], "datatype": "BOOL", "data": [True, False, True]}
    assert single == {"name": "word", "shape": [1], "datatype": "BYTES", "data": ["hello"]}


def test_a_configured_datatype_and_shape_win_over_what_the_values_suggest() -> None:
    spec = InputSpec("pixels", "input__0", "FP32", (-1, 2, 2))

    tensor = build_tensor(spec, [1, 2, 3, 4, 5, 6, 7, 8])

    assert tensor == {
        "name": "input__0",
        "shape": [2, 2, 2],
        "datatype": "FP32",
        "data": [1, 2, 3, 4, 5, 6, 7, 8],
    }


def test_a_configured_datatype_names_the_value_that_does_not_fit() -> None:
    with pytest.raises(InvalidInput, match=r"rows\[1\]\[0\] = \"x\" is not a number"):
        build_tensor(InputSpec("rows", "rows", "FP32"), [[1, 2], ["x", 4]])


# -- Outputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "shape", "nested"),
    [
        ([0, 1, 2], [3, 1], [[0], [1], [2]]),
        ([1, 2, 3, 4, 5, 6], [2, 3], [[1, 2, 3], [4, 5, 6]]),
        ([1, 2, 3, 4, 5, 6, 7, 8], [2, 2, 2], [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]),
        ([7], [], 7),
        ([], [0], []),
        ([], [2, 0], [[], []]),
        ([], [0, 3], []),
        (["yes", "no"], [2], ["yes", "no"]),
    ],
)
def test_output_data_is_nested_by_its_shape(data: list[Any], shape: list[int], nested: Any) -> None:
    assert reshape(data, shape) == nested


rectangular = st.lists(st.integers(1, 3), min_size=1, max_size=3).flatmap(
    lambda shape: st.tuples(
        st.just(shape),
        st.lists(st.integers(), min_size=_size(shape), max_size=_size(shape)),
    )
)


def _size(shape: list[int]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


@given(rectangular)
def test_reshaping_undoes_flattening(case: tuple[list[int], list[int]]) -> None:
    shape, data = case
    nested = reshape(data, shape)

    assert infer_shape(nested, "x") == shape
    assert flatten(nested) == data


def test_outputs_are_keyed_by_name_whether_the_server_sent_data_flat_or_nested() -> None:
    answer = {
        "model_name": "iris",
        "outputs": [
            {"name": "predict", "shape": [2, 1], "datatype": "INT64", "data": [0, 2]},
            {"name": "proba", "shape": [2, 2], "datatype": "FP64", "data": [[0.9, 0.1], [0, 1]]},
        ],
    }

    assert read_outputs(answer, "http://s/v2/models/iris/infer", ["predict"]) == {
        "predict": {"data": [[0], [2]], "shape": [2, 1], "datatype": "INT64"},
        "proba": {"data": [[0.9, 0.1], [0, 1]], "shape": [2, 2], "datatype": "FP64"},
    }


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"error": "x"}, r"the answer has no \"outputs\" list"),
        ({"outputs": [{"shape": [1], "data": [1]}]}, r"outputs\[0\] is not a named tensor"),
        ({"outputs": [{"name": "y", "shape": "1", "data": [1]}]}, "'y' has no valid shape"),
        ({"outputs": [{"name": "y", "shape": [2, 2], "data": [1]}]}, r"has 1 value\(s\) but"),
        ({"outputs": [{"name": "y", "shape": [1], "data": [1]}]}, "lacks the requested output"),
    ],
)
def test_an_answer_that_breaks_the_protocol_is_a_server_error(answer: Any, message: str) -> None:
    with pytest.raises(ServerError, match=message):
        read_outputs(answer, "http://user:pw@s/v2/models/m/infer", ["wanted"])
