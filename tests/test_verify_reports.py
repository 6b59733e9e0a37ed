"""vsgen.verify's reports, field by field: what ``verify_array``, ``verify_file``,
``verify_tensors`` and the constant check put in them, their JSON, the record check,
the choice of a tensor, and every message a malformed or missing record gives.

The statistics themselves are judged against scipy in test_verify.py; here each
report's fields are compared with values computed from the inputs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import safetensors.numpy

import vsgen
from vsgen import formats, verify
from vsgen.formats import readers


def with_records(path, arrays: dict[str, np.ndarray], records: dict) -> str:
    document = {"format": 1, "vsgen_version": "0.2.0", "tensors": records}
    safetensors.numpy.save_file(arrays, str(path), metadata={"vsgen": json.dumps(document)})
    return str(path)


def uniform_record(shape, seed=1, **extra) -> dict:
    record = {
        "kind": "variance_scaling",
        "config": {"scale": 1.0, "mode": "fan_in", "distribution": "uniform", "seed": seed},
        "dtype": "float32",
        "shape": list(shape),
    }
    record.update(extra)
    return record


def uniform(shape, seed=1) -> np.ndarray:
    return vsgen.VarianceScaling(seed=seed, distribution="uniform").plan(shape).array()


# --- verify_array ---------------------------------------------------------------------------------


def test_verify_array_fills_every_field():
    values = uniform((64, 32))
    initializer = vsgen.VarianceScaling(distribution="uniform")
    report = verify.verify_array(values, initializer)
    assert (report.path, report.format, report.name, report.source) == (
        None,
        "array",
        "array",
        "options",
    )
    assert report.shape == (64, 32) and report.dtype == "float32"
    expected = verify._expected_dict(initializer.scaling((64, 32)), initializer, (64, 32))
    assert report.expected == expected and report.expected["fan_in"] == 64
    assert report.summary.count == 2048 and report.verdict == verify.CONSISTENT
    assert report.notes == []
    with_fans = verify.verify_array(values, initializer, fan_shape=(128, 32))
    assert with_fans.expected["fan_in"] == 128 and with_fans.expected["fan_shape"] == [128, 32]


def test_verify_array_chunks_do_not_change_the_report():
    values = uniform((50, 20))
    initializer = vsgen.VarianceScaling(distribution="uniform")
    whole = verify.verify_array(values, initializer)
    for chunk in (1, 7, 10**6):
        assert verify.verify_array(values, initializer, chunk_size=chunk).summary == whole.summary
    limited = verify.verify_array(values, initializer, max_sample=100)
    assert limited.ks is not None and limited.ks.sample_size == 100


def test_verify_array_refuses_other_types_naming_the_array():
    with pytest.raises(ValueError) as caught:
        verify.verify_array(np.zeros(4, np.int32), vsgen.VarianceScaling())
    assert str(caught.value) == (
        "array: tensor 'array' has dtype int32; only float16, bfloat16, float32 and float64 "
        "tensors can be checked"
    )


# --- a file's tensors -----------------------------------------------------------------------------


def test_verify_file_keeps_the_file_s_path_format_and_chunking(tmp_path):
    path = with_records(
        tmp_path / "m.safetensors", {"w": uniform((40, 30))}, {"w": uniform_record((40, 30))}
    )
    report = verify.verify_file(path)
    assert (report.path, report.format, report.name, report.source) == (
        path,
        "safetensors",
        "w",
        "provenance",
    )
    assert report.verdict == verify.CONSISTENT
    small = verify.verify_file(path, chunk_size=7, max_sample=50)
    assert small.summary == report.summary and small.ks is not None and small.ks.sample_size == 50
    opened = readers.open_file(path)
    assert verify.verify_file(opened, "w").summary == report.summary


def test_pick_name_messages(tmp_path):
    arrays = {f"t{i:02d}": uniform((4, 4), i) for i in range(25)}
    path = with_records(tmp_path / "m.safetensors", arrays, {})
    names = ", ".join(f"t{i:02d}" for i in range(20))
    with pytest.raises(ValueError) as caught:
        verify.open_tensor(path)
    assert str(caught.value) == f"{path} holds 25 tensors ({names}); choose one with --name"
    with pytest.raises(ValueError) as caught:
        verify.open_tensor(path, "nope")
    assert str(caught.value) == f"{path} has no tensor named 'nope'; it holds: {names}"
    two = with_records(
        tmp_path / "two.safetensors", {"a": uniform((4, 4)), "b": uniform((4, 4))}, {}
    )
    with pytest.raises(ValueError, match=r"holds 2 tensors \(a, b\); choose one with --name"):
        verify.open_tensor(two)
    one = with_records(tmp_path / "one.safetensors", {"a": uniform((4, 4))}, {})
    assert verify.open_tensor(one).name == "a"
    with pytest.raises(ValueError, match="holds no tensors"):
        verify._pick_name("p", [], None)


def test_verify_tensors_reports_the_file_whole(tmp_path):
    arrays = {"w": uniform((40, 30)), "n": np.arange(4, dtype=np.int64), "x": uniform((8, 8), 2)}
    records = {"w": uniform_record((40, 30)), "gone": uniform_record((4, 4))}
    path = with_records(tmp_path / "m.safetensors", arrays, records)
    report = verify.verify_tensors(path)
    assert (report.path, report.format) == (path, "safetensors")
    assert [r.name for r in report.reports] == ["w"]
    assert report.not_judged == [
        {"name": "n", "reason": "'n' is int64, not a float tensor"},
        {
            "name": "x",
            "reason": f"{path}: tensor 'x' is not in the file's vsgen provenance "
            "(vsgen did not write it)",
        },
    ]
    assert report.missing == ["gone"] and report.verdict == verify.NOT_CONSISTENT
    assert report.exit_code == 1 and not report.consistent
    document = json.loads(report.to_json())
    assert report.to_json() == json.dumps(report.as_dict(), indent=2)
    assert list(document) == [
        "path",
        "format",
        "verdict",
        "consistent",
        "tensors",
        "not_judged",
        "missing",
    ]
    assert (document["path"], document["format"], document["verdict"], document["consistent"]) == (
        path,
        "safetensors",
        "NOT consistent",
        False,
    )
    assert document["tensors"][0]["name"] == "w" and document["missing"] == ["gone"]
    # With an initializer the record is not consulted: nothing is missing.
    judged = verify.verify_tensors(path, vsgen.VarianceScaling(distribution="uniform"))
    assert judged.missing == [] and [r.name for r in judged.reports] == ["w", "x"]
    assert all(r.source == "options" for r in judged.reports)
    limited = verify.verify_tensors(path, chunk_size=3, max_sample=40)
    assert limited.reports[0].ks.sample_size == 40
    assert limited.reports[0].summary == report.reports[0].summary


def test_verify_tensors_shares_one_parsed_record_between_tensors(tmp_path, monkeypatch):
    arrays = {"a": uniform((8, 8)), "b": uniform((8, 8), 2)}
    records = {"a": uniform_record((8, 8)), "b": uniform_record((8, 8), 2)}
    path = with_records(tmp_path / "m.safetensors", arrays, records)
    parsed = []
    real = verify.provenance.parse_metadata
    monkeypatch.setattr(
        verify.provenance, "parse_metadata", lambda *a: parsed.append(a) or real(*a)
    )
    verify.verify_tensors(path)
    assert len(parsed) == 2  # once for the missing tensors, once for the judged ones


def test_verify_tensors_raises_the_first_reason_when_nothing_is_judged(tmp_path):
    path = with_records(tmp_path / "m.safetensors", {"a": np.arange(3), "b": uniform((4, 4))}, {})
    with pytest.raises(verify.NotJudgedError) as caught:
        verify.verify_tensors(path)
    assert str(caught.value) == "'a' is int64, not a float tensor"
    empty = tmp_path / "e.safetensors"
    safetensors.numpy.save_file({}, str(empty))
    with pytest.raises(ValueError) as caught:
        verify.verify_tensors(str(empty))
    assert str(caught.value) == f"{empty} holds no tensors"
    gone = with_records(tmp_path / "g.safetensors", {}, {"w": uniform_record((4, 4))})
    report = verify.verify_tensors(gone)
    assert report.reports == [] and report.missing == ["w"] and report.exit_code == 1


def test_missing_tensors(tmp_path):
    path = with_records(
        tmp_path / "m.safetensors", {"b": uniform((4, 4))}, {"a": {}, "b": {}, "c": {}}
    )
    assert verify.missing_tensors(readers.open_file(path)) == ["a", "c"]
    bare = tmp_path / "bare.safetensors"
    safetensors.numpy.save_file({"b": uniform((4, 4))}, str(bare))
    assert verify.missing_tensors(readers.open_file(str(bare))) == []
    bad = tmp_path / "bad.safetensors"
    safetensors.numpy.save_file({"b": uniform((4, 4))}, str(bad), metadata={"vsgen": "[]"})
    with pytest.raises(ValueError) as caught:
        verify.missing_tensors(readers.open_file(str(bad)))
    assert (
        str(caught.value) == f"{bad}: the vsgen provenance is malformed: field 'tensors' is missing"
    )


# --- what the record says -------------------------------------------------------------------------


def source_of(tmp_path, record: dict, values=None, name="w"):
    values = uniform((16, 8)) if values is None else values
    path = with_records(tmp_path / "m.safetensors", {name: values}, {name: record})
    return verify.open_tensor(path)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"config": "x"}, "field 'config' is missing or not an object"),
        ({"config": KeyError}, "field 'config' is missing or not an object"),
        ({"dtype": 5}, "field 'dtype' is not a string"),
        ({"rows": "ab"}, None),
    ],
)
def test_malformed_records_name_the_tensor_and_the_field(tmp_path, change, problem):
    record = uniform_record((16, 8))
    for key, value in change.items():
        if value is KeyError:
            del record[key]
        else:
            record[key] = value
    source = source_of(tmp_path, record)
    with pytest.raises(ValueError) as caught:
        verify.verify_source(source)
    message = str(caught.value)
    assert message.startswith(f"{source.path}: the vsgen record of tensor 'w' is malformed: ")
    if problem is not None:
        assert message.endswith(problem)


def test_a_record_without_a_distribution_is_not_judged(tmp_path):
    source = source_of(tmp_path, {"kind": "copied" * 10})
    with pytest.raises(verify.NotJudgedError) as caught:
        verify.verify_source(source)
    assert str(caught.value) == (
        f"{source.path}: tensor 'w' is recorded as {('copied' * 10)[:40]!r}, which has no "
        "distribution to check"
    )


def test_a_record_without_kind_is_variance_scaling(tmp_path):
    record = uniform_record((16, 8))
    del record["kind"]
    report = verify.verify_source(source_of(tmp_path, record))
    assert report.verdict == verify.CONSISTENT and report.source == "provenance"


def test_the_record_check_compares_shape_and_dtype(tmp_path):
    long_dtype = "float64" + "x" * 50
    source = source_of(tmp_path, uniform_record((16, 8), dtype=long_dtype))
    check = verify._record_check(source, {"shape": [16, 8], "dtype": long_dtype})
    assert (check.name, check.passed, check.value, check.threshold) == ("record", False, None, None)
    assert check.detail == f"file has shape (16, 8) float32; recorded (16, 8) {long_dtype[:40]}"
    same = verify._record_check(source, {"shape": [16, 8], "dtype": "float32"})
    assert same.passed and same.detail == "file has shape (16, 8) float32; recorded (16, 8) float32"
    bare = verify._record_check(source, {})
    assert bare.passed and bare.detail == "file has shape (16, 8) float32; recorded (16, 8) float32"
    assert not verify._record_check(source, {"shape": [8, 16]}).passed


def test_rows_are_noted(tmp_path):
    values = uniform((16, 8))
    record = uniform_record((8, 8), full_shape=[16, 8], rows=[4, 12])
    report = verify.verify_source(source_of(tmp_path, record, values[4:12]))
    assert report.notes[0] == "rows 4:12 of (16, 8)"


def test_a_fan_shape_needs_an_initializer(tmp_path):
    source = source_of(tmp_path, uniform_record((16, 8)))
    with pytest.raises(ValueError) as caught:
        verify.verify_source(source, None, (32, 8))
    assert str(caught.value) == "a fan shape is only used with an explicit initializer"


def test_recorded_record_messages(tmp_path):
    source = source_of(tmp_path, uniform_record((16, 8)))
    assert verify.recorded_record(source)["dtype"] == "float32"
    assert verify.recorded_expectation(source)[1] == (16, 8)
    other = source_of(tmp_path, uniform_record((16, 8)), name="v")
    other.cache["records"] = {}
    with pytest.raises(verify.NoExpectationError) as caught:
        verify.recorded_record(other)
    assert str(caught.value) == (
        f"{other.path}: tensor 'v' is not in the file's vsgen provenance (vsgen did not write it)"
    )
    np.save(tmp_path / "w.npy", uniform((4, 4)))
    with pytest.raises(verify.NoExpectationError, match=r"w.npy: .npy files record no provenance"):
        verify.recorded_record(verify.open_tensor(str(tmp_path / "w.npy")))
    bare = tmp_path / "bare.safetensors"
    safetensors.numpy.save_file({"w": uniform((4, 4))}, str(bare))
    with pytest.raises(verify.NoExpectationError) as caught:
        verify.recorded_record(verify.open_tensor(str(bare)))
    assert str(caught.value) == f"{bare} carries no vsgen provenance (it was not written by vsgen)"


# --- constants ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.0, 1.0, -2.5])
def test_a_constant_report(tmp_path, value):
    values = np.full((6, 5), value, np.float32)
    record = {"kind": "constant", "value": value, "dtype": "float32", "shape": [6, 5]}
    report = verify.verify_source(source_of(tmp_path, record, values))
    assert (report.source, report.expected) == ("provenance", {"kind": "constant", "value": value})
    assert report.path.endswith("m.safetensors") and report.format == "safetensors"
    assert report.verdict == verify.CONSISTENT and report.ks is None and report.notes == []
    [record_check, finite, constant] = report.checks
    assert (record_check.name, finite.name, constant.name) == ("record", "finite", "constant")
    assert constant.passed and constant.value == 0.0 and constant.threshold == 0.0
    assert constant.detail == f"min {value:.6g}, max {value:.6g}; every value must be {value:g}"


def test_a_changed_constant_report(tmp_path):
    values = np.full((6, 5), 1.0, np.float32)
    values[2, 3] = 1.5
    values[0, 0] = 0.25
    record = {"kind": "constant", "value": 1.0}
    report = verify.verify_source(source_of(tmp_path, record, values))
    constant = report.checks[-1]
    assert (
        not constant.passed and constant.value == 0.75 and report.verdict == verify.NOT_CONSISTENT
    )
    assert constant.detail == "min 0.25, max 1.5; every value must be 1"
    low = values.copy()
    low[2, 3] = 1.0
    assert verify.verify_source(source_of(tmp_path, record, low)).checks[-1].value == 0.75


def test_a_constant_is_compared_in_the_file_s_dtype(tmp_path):
    values = np.full(4, np.float16(0.1), np.float16)
    report = verify.verify_source(source_of(tmp_path, {"kind": "constant", "value": 0.1}, values))
    assert report.verdict == verify.CONSISTENT
    assert report.expected["value"] == float(np.float16(0.1))
    big = verify.verify_source(source_of(tmp_path, {"kind": "constant", "value": 1e300}, values))
    assert big.expected["value"] == math.inf and big.verdict == verify.NOT_CONSISTENT


def test_a_constant_of_only_non_finite_values(tmp_path):
    values = np.full(3, np.nan, np.float32)
    report = verify.verify_source(source_of(tmp_path, {"kind": "constant", "value": 0.0}, values))
    assert [c.name for c in report.checks] == ["record", "finite"]
    assert report.verdict == verify.NOT_CONSISTENT


@pytest.mark.parametrize("value", ["x", True, None, [1]])
def test_a_constant_record_needs_a_number(tmp_path, value):
    source = source_of(tmp_path, {"kind": "constant", "value": value}, np.zeros(4, np.float32))
    with pytest.raises(ValueError) as caught:
        verify.verify_source(source)
    assert str(caught.value).endswith("is malformed: field 'value' is not a number")
    missing = source_of(tmp_path, {"kind": "constant"}, np.zeros(4, np.float32))
    assert verify.verify_source(missing).verdict == verify.NOT_CONSISTENT  # NaN: nothing equals it


def test_a_constant_report_is_chunked_and_sampled_as_asked(tmp_path):
    values = np.full(5000, 2.0, np.float32)
    source = source_of(tmp_path, {"kind": "constant", "value": 2.0}, values)
    report = verify.verify_source(source, chunk_size=7, max_sample=100)
    assert report.histogram.sample_size == 100 and report.summary.count == 5000


# --- reports as JSON ------------------------------------------------------------------------------


def test_a_report_as_json():
    report = verify.verify_array(uniform((32, 16)), vsgen.VarianceScaling(distribution="uniform"))
    document = report.as_dict()
    assert document["shape"] == [32, 16] and document["consistent"] is True
    assert report.to_json() == json.dumps(document, indent=2)
    assert verify._json_safe({"a": [math.inf, (1.0, -math.inf)], "b": math.nan}) == {
        "a": ["inf", [1.0, "-inf"]],
        "b": "nan",
    }


def test_the_normal_cdf_is_computed_in_float64():
    z = np.array([-1.0, 0.0, 1.5], np.float32)
    expected = [0.5 * math.erfc(1.0 / math.sqrt(2)), 0.5, 0.5 * math.erfc(-1.5 / math.sqrt(2))]
    got = verify._normal_cdf(z)
    assert got.dtype == np.float64 and got.tolist() == pytest.approx(expected, abs=0, rel=1e-15)


def test_prefetching_starts_above_one_read_chunk(tmp_path, monkeypatch):
    started = []
    real = verify.prefetched
    monkeypatch.setattr(verify, "prefetched", lambda chunks: started.append(1) or real(chunks))
    monkeypatch.setattr(verify, "READ_CHUNK", 128)
    values = uniform((16, 8))
    verify.verify_source(source_of(tmp_path, uniform_record((16, 8)), values))
    assert started == []  # 128 values: one chunk
    bigger = uniform((16, 9))
    verify.verify_source(source_of(tmp_path, uniform_record((16, 9)), bigger))
    assert started == [1]


def test_formats_read_by_open_tensor(tmp_path):
    np.save(tmp_path / "w.npy", uniform((8, 8)))
    source = verify.open_tensor(str(tmp_path / "w.npy"), "ignored")
    assert (source.name, source.format, source.size, source.shape) == ("w", "npy", 64, (8, 8))
    assert formats.read_tensor_infos(str(tmp_path / "w.npy"))[0].name == "w"


# --- the judge's thresholds and wording -------------------------------------------------------


def summary_of(scaling, **changes) -> verify.Summary:
    fields = {"count": 10_000, "mean": scaling.mean, "std": scaling.stddev, "nonfinite": 0}
    fields.update({"min": -scaling.stddev, "max": scaling.stddev})
    fields.update(changes)
    return verify.Summary(**fields)


def checks_of(scaling, summary, sample=None) -> dict[str, verify.Check]:
    sample = np.empty(0, dtype=np.float32) if sample is None else sample
    checks, _ = verify.judge(summary, sample, 1, scaling, np.dtype(np.float32))
    return {check.name: check for check in checks}


@pytest.mark.parametrize(
    ("distribution", "what"), [("truncated_normal", "2s"), ("uniform", "limit")]
)
def test_the_bound_holds_at_the_threshold_itself(distribution, what):
    scaling = vsgen.VarianceScaling(distribution=distribution).scaling((64, 32))
    allowed = checks_of(scaling, summary_of(scaling))["bounds"].threshold
    at = checks_of(scaling, summary_of(scaling, min=-allowed, max=allowed))["bounds"]
    assert at.passed and at.value == allowed
    assert f"({what} = " in at.detail and " <= " in at.detail
    beyond = checks_of(scaling, summary_of(scaling, max=np.nextafter(allowed, np.inf)))["bounds"]
    assert not beyond.passed and " > " in beyond.detail


def test_the_mean_holds_at_its_tolerance_and_names_an_offset():
    scaling = vsgen.VarianceScaling(distribution="uniform").scaling((64, 32))
    tolerance = checks_of(scaling, summary_of(scaling))["mean"].threshold
    at = checks_of(scaling, summary_of(scaling, mean=tolerance))["mean"]
    assert at.passed and at.value == tolerance and at.detail.startswith("|mean| = ")
    beyond = checks_of(scaling, summary_of(scaling, mean=np.nextafter(tolerance, np.inf)))
    assert not beyond["mean"].passed
    offset = vsgen.RandomNormal(mean=1.0, stddev=0.5).scaling((64, 32))
    assert checks_of(offset, summary_of(offset))["mean"].detail.startswith("|mean - 1| = ")


@pytest.mark.parametrize(
    ("initializer", "interval"),
    [
        (vsgen.RandomUniform(minval=-1.0, maxval=1.0), "[-1, 1)"),  # uniform: high excluded
        (vsgen.TruncatedNormal(mean=1.0, stddev=0.5), "[0, 2]"),  # mean +- 2 stddev, closed
    ],
)
def test_a_range_of_its_own_is_printed_with_its_brackets(initializer, interval):
    scaling = initializer.scaling((64, 32))
    check = checks_of(scaling, summary_of(scaling, min=0.5, max=0.75))["bounds"]
    assert check.passed
    assert check.detail.startswith(f"min 0.5, max 0.75 in {interval}: 0 <= ")


def test_the_ks_line_prints_statistic_and_critical_value():
    scaling = vsgen.VarianceScaling(distribution="uniform").scaling((64, 32))
    sample = uniform((64, 32)).ravel()
    check = checks_of(scaling, summary_of(scaling), sample)["ks"]
    statistic, sign, critical = check.detail.split(" (")[0].removeprefix("D = ").split(" ")
    assert sign == "<=" and check.passed
    assert float(statistic) == pytest.approx(check.value, rel=1e-3)
    assert float(critical) == pytest.approx(check.threshold, rel=1e-3)
    assert check.detail.endswith(f"{sample.size} values, every 1)")


def test_the_finite_check_counts_the_non_finite_values():
    scaling = vsgen.VarianceScaling().scaling((4, 4))
    check = checks_of(scaling, summary_of(scaling, nonfinite=2))["finite"]
    assert (check.passed, check.value, check.threshold) == (False, 2.0, 0.0)
    assert check.detail == "2 NaN/inf values"


def test_one_hundred_values_are_enough_to_judge():
    initializer = vsgen.VarianceScaling(distribution="uniform")
    enough = verify.verify_array(uniform((10, 10)), initializer)
    assert enough.notes == [] and enough.verdict == verify.CONSISTENT
    few = verify.verify_array(uniform((99,)), initializer)
    assert few.verdict == verify.TOO_FEW
    assert few.notes == [
        "only 99 values: below 100 the checks have little power, so passing them proves little"
    ]


def test_the_expected_fields_keep_explicit_axes():
    initializer = vsgen.VarianceScaling(input_axes=[0], output_axes=[1])
    report = verify.verify_array(uniform((64, 32)), initializer)
    assert (report.expected["input_axes"], report.expected["output_axes"]) == ([0], [1])
    assert report.expected["layout"] == "keras" and report.expected["fan_shape"] == [64, 32]


def test_the_histogram_spans_the_whole_tensor_not_only_the_sample():
    scaling = vsgen.VarianceScaling().scaling((4, 4))
    sample = np.array([-1.0, 0.0, 1.0], dtype=np.float32)
    histogram = verify._histogram(sample, summary_of(scaling, min=-4.0, max=4.0))
    assert (histogram.edges[0], histogram.edges[-1]) == (-4.0, 4.0)
    assert sum(histogram.counts) == 3 and histogram.sample_size == 3
    # One value only: a bin range of +-0.5 around it (a quarter at half scale).
    for value in (0.0, 1.0):
        constant = np.full(5, value, dtype=np.float32)
        histogram = verify._histogram(constant, summary_of(scaling, min=value, max=value))
        assert (histogram.edges[0], histogram.edges[-1]) == (value - 0.5, value + 0.5)


def test_summarize_samples_every_kth_value_across_uneven_chunks():
    # 10 values, at most 4 in the sample: every ceil(10 / 4) = 3rd, flat indices 0, 3, 6, 9.
    values = np.arange(10, dtype=np.float64)
    chunks = iter([values[:4], values[4:5], values[5:]])
    summary, sample, stride = verify.summarize(chunks, 10, max_sample=4)
    assert stride == 3 and sample.tolist() == [0.0, 3.0, 6.0, 9.0]
    assert (summary.count, summary.mean, summary.min, summary.max) == (10, 4.5, 0.0, 9.0)
    with pytest.raises(ValueError) as caught:
        verify.summarize(iter([values[:5]]), 6)
    assert str(caught.value) == "read 5 values, expected 6"


def test_moments_leave_out_an_infinity_beside_finite_values():
    # The block's minimum is finite and its maximum is not: the infinity is counted apart.
    summary, _, _ = verify.summarize(iter([np.array([-1.0, 2.0, np.inf])]), 3)
    assert (summary.count, summary.nonfinite) == (3, 1)
    assert (summary.mean, summary.min, summary.max) == (0.5, -1.0, 2.0)
    summary, _, _ = verify.summarize(iter([np.array([-np.inf, 2.0, 4.0])]), 3)
    assert (summary.nonfinite, summary.mean, summary.min) == (1, 3.0, 2.0)


def test_clamped_ends_move_only_the_ends_a_clamp_could_have_reached():
    scaling = vsgen.RandomUniform(minval=-1.0, maxval=1.0).scaling((4,))
    # float16 holds [-1, 1) as -1 .. 1 - 2**-11 (its spacing below 1 is 2**-11).
    top = 1 - 2.0**-11
    values = np.array([-1.0, 0.0, top])
    upper, lower = verify._clamped_ends(
        scaling, np.dtype(np.float16), values, values + 0.1, values - 0.1
    )
    assert upper.tolist() == [-0.9, 0.1, np.inf]
    assert lower.tolist() == [-np.inf, -0.1, top - 0.1]
    # A value beyond the low end: nothing was clamped there, that end keeps its midpoint.
    beyond = np.array([-1.5, -1.0, top])
    upper, lower = verify._clamped_ends(
        scaling, np.dtype(np.float16), beyond, beyond + 0.1, beyond - 0.1
    )
    assert lower.tolist() == (beyond - 0.1).tolist() and upper[-1] == np.inf


def test_a_malformed_document_names_the_file(tmp_path):
    path = tmp_path / "m.safetensors"
    safetensors.numpy.save_file({"w": uniform((4, 4))}, str(path), metadata={"vsgen": "{"})
    with pytest.raises(ValueError) as caught:
        verify.recorded_record(verify.open_tensor(str(path)))
    assert str(caught.value).startswith(f"{path}: the vsgen provenance is malformed: ")
