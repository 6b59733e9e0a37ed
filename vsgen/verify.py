"""Verification: does a tensor file hold what its initializer promises?

Reads a ``.npy``, ``.h5`` or ``.safetensors`` tensor in bounded memory
(fixed-size chunks: plain sequential reads at the data offset for npy and
safetensors, which, unlike a memory map, keep the resident set small however
large the file; slices along the leading axes for HDF5; float16 and bfloat16
are upcast one chunk at a time),
summarises it (count, mean, std, min, max, a histogram) and judges it against
the expected distribution, taken from the file's vsgen provenance or from an
initializer the caller gives. No printing and no click here: the result is a
:class:`VerifyReport`, which ``vsgen check`` prints.

Checks (every one must pass; ``n`` is the number of values, ``sigma`` the
expected stddev, ``p`` the dtype's significand bits: 8 bfloat16, 11 float16,
24 float32, 53 float64, and ``rounding = 2**-p + 2**-24`` the relative error
of rounding to the dtype, through float32 for narrow dtypes):

* ``finite``: no NaN or infinity.
* ``record``: the file's shape and dtype equal the recorded ones (provenance only).
* ``bounds`` (truncated_normal, uniform): every ``|x| <= B * (1 + rounding)``
  plus half the dtype's smallest subnormal, with ``B = 2s`` or ``limit``: a
  value may exceed the bound only by rounding to the dtype.
* ``mean``: ``|mean| <= 6 sigma / sqrt(n) + rounding * sigma`` (six standard
  errors: a false alarm about once in 5e8 files).
* ``std``: ``|std - sigma| <= 6 sigma sqrt((kurtosis - 1) / (4 n)) +
  rounding * sigma``, the standard error of a sample stddev, with kurtosis 3
  (normal), 2.3655 (normal truncated at +-2), 1.8 (uniform).
* ``ks``: Kolmogorov-Smirnov distance ``D`` between the empirical CDF of a
  deterministic strided subsample of at most ``MAX_SAMPLE`` values (every
  ``ceil(n / MAX_SAMPLE)``-th value in C order) and the exact CDF of the
  distribution *rounded to the dtype* (each stored value stands for the
  interval that rounds to it, so float16/bfloat16 steps are not mistaken for
  misfit). It fails when Stephens' statistic ``D (sqrt(m) + 0.12 +
  0.11 / sqrt(m))`` exceeds the asymptotic critical value for
  ``KS_ALPHA = 1e-3``, i.e. ``sqrt(ln(2 / alpha) / 2) = 1.9495``; run for
  ``m >= 5`` values.

Around a mean (``RandomNormal``, ``TruncatedNormal``, ``RandomUniform``, whose
values are centred on ``mu`` = the mean or the range's midpoint): ``bounds``
asks min and max to lie in the range (``[mu - 2s, mu + 2s]`` or ``[minval,
maxval)``) widened by ``rounding`` times its larger end plus half the smallest
subnormal; ``mean`` compares ``|mean - mu|``, and ``mean`` and ``std`` allow
``rounding * |mu|`` more (rounding moves a value by up to ``rounding * |v|``);
the KS test compares at the midpoints for every dtype, since a type's spacing
far from 0 may be a sizeable part of the stddev.

Verdict: ``NOT consistent`` if any check fails; otherwise ``too few values to
judge`` below ``MIN_VALUES`` values (the checks still ran and their false-alarm
rates hold, but they have little power), else ``consistent``.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vsgen import provenance
from vsgen.fans import normalize_shape
from vsgen.formats import registry
from vsgen.formats.pipeline import prefetched
from vsgen.formats.readers import READ_CHUNK, StoredTensor, TensorFile, open_file, read_values
from vsgen.initializer import TRUNCATED_STD_FACTOR, RandomInitializer, Scaling

#: Moments are computed over fixed blocks of this many values and merged in
#: order, so the result does not depend on the read chunk size.
STATS_BLOCK = 1 << 16
#: Largest subsample the KS test sorts (8 MB as float64).
MAX_SAMPLE = 1_000_000
#: Below this many values a passing tensor is "too few values to judge".
MIN_VALUES = 100
#: Fewer values than this and the KS test is skipped.
KS_MIN_VALUES = 5
#: Significance level of the KS test.
KS_ALPHA = 1e-3
#: Standard errors allowed for mean and std.
SIGMAS = 6.0
#: Histogram bins (over the subsample, between the tensor's min and max).
HISTOGRAM_BINS = 16

CONSISTENT = "consistent"
NOT_CONSISTENT = "NOT consistent"
TOO_FEW = "too few values to judge"

#: E[X^4] / E[X^2]^2 of each distribution.
_TRUNCATION = 2.0
_PHI_AT_TRUNCATION = math.exp(-(_TRUNCATION**2) / 2) / math.sqrt(2 * math.pi)
_MASS_INSIDE = math.erf(_TRUNCATION / math.sqrt(2))
_TRUNCATED_M2 = TRUNCATED_STD_FACTOR**2
_TRUNCATED_M4 = (
    3 * (_MASS_INSIDE - 2 * _TRUNCATION * _PHI_AT_TRUNCATION)
    - 2 * _TRUNCATION**3 * _PHI_AT_TRUNCATION
) / _MASS_INSIDE
KURTOSIS = {
    "untruncated_normal": 3.0,
    "truncated_normal": _TRUNCATED_M4 / _TRUNCATED_M2**2,
    "uniform": 1.8,
}

_READABLE = ("float16", "bfloat16", "float32", "float64")


class NoExpectationError(ValueError):
    """The file records no provenance and no initializer was given."""


class NotJudgedError(ValueError):
    """The tensor's record describes no distribution (e.g. values copied from elsewhere)."""


# --- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One test of the tensor: its measured ``value`` against ``threshold``."""

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


@dataclass(frozen=True)
class Summary:
    """Moments of the finite values and the count of non-finite ones."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    nonfinite: int


@dataclass(frozen=True)
class KSResult:
    """Kolmogorov-Smirnov test on a subsample of ``sample_size`` values."""

    statistic: float
    pvalue: float
    critical: float
    alpha: float
    sample_size: int
    stride: int


@dataclass(frozen=True)
class Histogram:
    """Counts of the subsample in ``len(counts)`` equal bins between ``edges``."""

    edges: list[float]
    counts: list[int]
    sample_size: int


@dataclass(frozen=True)
class VerifyReport:
    """Everything ``vsgen check`` prints; ``as_dict()`` is its ``--json`` form."""

    path: str | None
    format: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    source: str
    expected: dict[str, Any]
    summary: Summary
    ks: KSResult | None
    histogram: Histogram
    checks: list[Check]
    verdict: str
    notes: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """False only for ``NOT consistent`` (``too few values to judge`` is not a failure)."""
        return self.verdict != NOT_CONSISTENT

    @property
    def exit_code(self) -> int:
        """0 for consistent or too few values to judge, 1 for NOT consistent."""
        return 0 if self.consistent else 1

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types (non-finite floats become strings)."""
        document = asdict(self)
        document["shape"] = list(self.shape)
        document["consistent"] = self.consistent
        return _json_safe(document)

    def to_json(self) -> str:
        """``as_dict()`` as indented JSON."""
        return json.dumps(self.as_dict(), indent=2)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


# --- reading -------------------------------------------------------------------------


@dataclass
class FileTensor:
    """One float tensor of a file, as verification sees it: the stored tensor
    (read through :mod:`vsgen.formats.readers`) and its file's metadata."""

    tensor: StoredTensor
    metadata: dict[str, str]
    dtype: np.dtype
    #: Shared by the sources of one file: its provenance, parsed once.
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.tensor.path

    @property
    def format(self) -> str:
        return self.tensor.format

    @property
    def name(self) -> str:
        return self.tensor.name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.tensor.shape

    @property
    def size(self) -> int:
        """Number of values."""
        return self.tensor.size

    def chunks(self, chunk_size: int | None = None) -> Iterator[np.ndarray]:
        """Consecutive 1-D pieces of the flat tensor, each at most ``chunk_size`` values
        (npy files in Fortran order and Zarr arrays chunked in tiles are read in
        storage order: the statistics do not depend on the order, only which values
        the strided subsample picks)."""
        return read_values(
            self.tensor, READ_CHUNK if chunk_size is None else chunk_size, any_order=True
        )


def _readable_dtype(dtype: np.dtype | str, path: str, name: str) -> np.dtype:
    from vsgen.dtypes import resolve_dtype

    label = getattr(dtype, "name", str(dtype))
    if label not in _READABLE:
        raise ValueError(
            f"{path}: tensor {name!r} has dtype {label}; only float16, bfloat16, float32 and "
            "float64 tensors can be checked"
        )
    return resolve_dtype(label)


def _pick_name(path: str, names: Sequence[str], name: str | None) -> str:
    if not names:
        raise ValueError(f"{path} holds no tensors")
    if name is None:
        if len(names) > 1:
            raise ValueError(
                f"{path} holds {len(names)} tensors ({', '.join(names[:20])}); choose one "
                "with --name"
            )
        return names[0]
    if name not in names:
        raise ValueError(f"{path} has no tensor named {name!r}; it holds: {', '.join(names[:20])}")
    return name


def _source(
    tensor_file: TensorFile, tensor: StoredTensor, cache: dict[str, Any] | None = None
) -> FileTensor:
    dtype = _readable_dtype(tensor.dtype, tensor_file.path, tensor.name)
    return FileTensor(tensor, tensor_file.metadata, dtype, {} if cache is None else cache)


def open_tensor(path: str | TensorFile, name: str | None = None) -> FileTensor:
    """Open tensor ``name`` of a ``.npy``, ``.h5`` or ``.safetensors`` file or an
    npy directory (headers only, through :func:`vsgen.formats.readers.open_file`).

    ``name`` may be omitted when the file holds one tensor; a ``.npy`` file holds
    one tensor and ignores ``name``. The format is told from the first bytes.
    ``path`` may also be a file :func:`~vsgen.formats.readers.open_file` opened.

    Raises:
        ValueError: unknown format, missing/ambiguous name, unsupported dtype,
            or a header the reader refuses.
        OSError: the file cannot be read.
    """
    tensor_file = path if isinstance(path, TensorFile) else open_file(path)
    if registry.get(tensor_file.format).one_tensor:
        name = None
    chosen = _pick_name(tensor_file.path, tensor_file.names, name)
    return _source(tensor_file, tensor_file.tensor(chosen))


# --- what to expect --------------------------------------------------------------------


def recorded_record(source: FileTensor) -> dict[str, Any]:
    """The provenance record the file keeps for the tensor.

    Raises:
        NoExpectationError: the file records no vsgen provenance for the tensor.
        ValueError: the provenance is malformed.
    """
    from vsgen import provenance

    if not registry.get(source.format).keeps_metadata:
        raise NoExpectationError(f"{source.path}: .npy files record no provenance")
    if provenance.METADATA_KEY not in source.metadata:
        raise NoExpectationError(
            f"{source.path} carries no vsgen provenance (it was not written by vsgen)"
        )
    if "records" not in source.cache:
        source.cache["records"] = provenance.parse_metadata(source.metadata, source.path)
    record = source.cache["records"].get(source.name)
    if record is None:
        raise NoExpectationError(
            f"{source.path}: tensor {source.name[:200]!r} is not in the file's vsgen provenance "
            "(vsgen did not write it)"
        )
    return record


def missing_tensors(tensor_file: TensorFile) -> list[str]:
    """The tensors the file's vsgen provenance records but the file does not hold
    (deleted from it since), in the record's order; ``[]`` for a file without provenance.

    Raises:
        ValueError: the provenance is malformed.
    """
    if provenance.METADATA_KEY not in tensor_file.metadata:
        return []
    records = provenance.parse_metadata(tensor_file.metadata, tensor_file.path)
    present = set(tensor_file.names)
    return [name for name in records if name not in present]


@contextlib.contextmanager
def _malformed_record(source: FileTensor) -> Iterator[None]:
    """A record whose fields have the wrong type or value is bad input, named as such."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, OverflowError) as error:
        detail = f"field {error} is missing" if isinstance(error, KeyError) else str(error)
        raise ValueError(
            f"{source.path}: the vsgen record of tensor {source.name[:200]!r} is malformed: "
            f"{' '.join(detail.split())[:300]}"
        ) from None


def recorded_expectation(
    source: FileTensor, record: dict[str, Any] | None = None
) -> tuple[RandomInitializer, tuple[int, ...], dict]:
    """The initializer, fan shape and record that the file's provenance gives for the tensor
    (``record``, if given, is the tensor's record, already read).

    Raises:
        NoExpectationError: the file records no vsgen provenance for the tensor.
        ValueError: the record is malformed (the message names the field).
    """
    from vsgen import provenance

    if record is None:
        record = recorded_record(source)
    with _malformed_record(source):
        if not isinstance(record.get("config"), dict):
            raise ValueError("field 'config' is missing or not an object")
        initializer = provenance.recorded_initializer(record)
        return initializer, provenance.recorded_fan_shape(record), record


# --- statistics ----------------------------------------------------------------------


class _Moments:
    """Count, mean, M2 (Chan et al.'s merge), min, max of finite values."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.nonfinite = 0

    def add(self, block: np.ndarray) -> None:
        # A NaN or an infinity shows in the block's min or max, so the finite
        # mask (two more passes) is only built for blocks that need it.
        if block.size == 0:
            return
        low, high = float(block.min()), float(block.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            finite = np.isfinite(block)
            self.nonfinite += int(block.size - np.count_nonzero(finite))
            block = block[finite]
            if block.size == 0:
                return
            low, high = float(block.min()), float(block.max())
        block_mean = float(block.mean())
        squares = block - block_mean
        np.multiply(squares, squares, out=squares)
        block_m2 = float(squares.sum())
        total = self.count + block.size
        delta = block_mean - self.mean
        self.mean += delta * block.size / total
        self.m2 += block_m2 + delta * delta * self.count * block.size / total
        self.count = total
        self.minimum = min(self.minimum, low)
        self.maximum = max(self.maximum, high)

    def summary(self) -> Summary:
        empty = self.count == 0
        return Summary(
            count=self.count + self.nonfinite,
            mean=math.nan if empty else self.mean,
            std=math.nan if empty else math.sqrt(self.m2 / self.count),
            min=math.nan if empty else self.minimum,
            max=math.nan if empty else self.maximum,
            nonfinite=self.nonfinite,
        )


def summarize(
    chunks: Iterator[np.ndarray], size: int, max_sample: int | None = None
) -> tuple[Summary, np.ndarray, int]:
    """One pass over the flat tensor: moments, and the strided subsample.

    Moments are computed in float64 over fixed blocks of ``STATS_BLOCK`` values
    and merged in order, so any chunking gives the same numbers. The subsample
    holds the values at flat indices ``0, k, 2k, ...`` with
    ``k = ceil(size / max_sample)``, in the tensor's own dtype.
    """
    max_sample = MAX_SAMPLE if max_sample is None else max_sample
    stride = max(1, -(-size // max(1, max_sample)))
    moments = _Moments()
    sample_parts: list[np.ndarray] = []
    carry: list[np.ndarray] = []
    carried = 0
    position = 0
    for chunk in chunks:
        sample_parts.append(np.array(chunk[(-position) % stride :: stride]))
        position += chunk.size
        carry.append(chunk)
        carried += chunk.size
        if carried < STATS_BLOCK:
            continue
        joined = np.concatenate(carry, dtype=np.float64)  # one pass: join and widen
        usable = joined.size - joined.size % STATS_BLOCK
        for start in range(0, usable, STATS_BLOCK):
            moments.add(joined[start : start + STATS_BLOCK])
        rest = joined[usable:]
        carry, carried = ([rest], rest.size) if rest.size else ([], 0)
    if carried:
        moments.add(np.concatenate(carry, dtype=np.float64))
    if position != size:
        raise ValueError(f"read {position} values, expected {size}")
    sample = np.concatenate(sample_parts) if sample_parts else np.empty(0)
    return moments.summary(), sample, stride


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    """Phi(z) = erfc(-z / sqrt(2)) / 2, elementwise (exact to a few ulp)."""
    erfc = np.frompyfunc(math.erfc, 1, 1)
    return 0.5 * np.asarray(erfc(-np.asarray(z, dtype=np.float64) / math.sqrt(2.0)), np.float64)


def _offset(scaling: Scaling) -> bool:
    """True when the values are not centred on 0 by construction (a mean, a
    uniform range of its own): the fixed-parameter initializers."""
    return scaling.mean != 0.0 or scaling.interval is not None


def expected_cdf(scaling: Scaling, x: np.ndarray) -> np.ndarray:
    """The exact CDF of the distribution ``scaling`` describes, at ``x``
    (``mean`` is 0 for variance scaling):

    * untruncated_normal: ``Phi((x - mean) / stddev)``;
    * truncated_normal: ``(Phi((x - mean) / s) - Phi(-2)) / (Phi(2) - Phi(-2))``
      on [mean - 2s, mean + 2s];
    * uniform: ``(x - low) / (high - low)`` on [low, high]: ``[-limit, limit]``,
      or ``[minval, maxval]`` for ``RandomUniform``.
    """
    x = np.asarray(x, dtype=np.float64)
    if scaling.distribution == "uniform":
        assert scaling.limit is not None
        if not _offset(scaling):
            return np.clip((x + scaling.limit) / (2 * scaling.limit), 0.0, 1.0)
        value_range = scaling.value_range()
        assert value_range is not None
        low, high = value_range
        return np.clip((x - low) / (high - low), 0.0, 1.0)
    centred = x - scaling.mean if _offset(scaling) else x
    if scaling.distribution == "truncated_normal":
        assert scaling.pre_truncation_std is not None
        low = 0.5 * math.erfc(_TRUNCATION / math.sqrt(2.0))
        cdf = (_normal_cdf(centred / scaling.pre_truncation_std) - low) / _MASS_INSIDE
        return np.clip(cdf, 0.0, 1.0)
    return _normal_cdf(centred / scaling.stddev)


def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution:
    ``2 sum_k (-1)^(k-1) exp(-2 k^2 lam^2)`` (or its Jacobi form for small lam)."""
    if lam <= 0:
        return 1.0
    if lam < 1.18:
        total = sum(
            math.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * lam * lam)) for k in range(1, 12)
        )
        return min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / lam * total))
    total = sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return min(1.0, max(0.0, 2 * total))


def ks_critical(sample_size: int, alpha: float = KS_ALPHA) -> float:
    """Critical D at level ``alpha``: ``sqrt(ln(2/alpha)/2) / (sqrt(m) + 0.12 + 0.11/sqrt(m))``."""
    root = math.sqrt(sample_size)
    return math.sqrt(math.log(2 / alpha) / 2) / (root + 0.12 + 0.11 / root)


def ks_test(sample: np.ndarray, scaling: Scaling, stride: int = 1) -> KSResult:
    """KS test of ``sample`` (finite values in their stored dtype) against ``scaling``.

    A stored value ``v`` stands for every real number that rounds to it, so the
    model CDF is evaluated at the midpoints to ``v``'s neighbours in the dtype:
    ``D = max(|F_n(v) - F(mid_up(v))|, |F_n(v-) - F(mid_down(v))|)`` over the
    distinct values ``v``. For float32 and float64 the midpoints are ``v`` itself
    (they differ by at most 2**-24 relative: a CDF error below 1e-7), unless
    the values sit on a mean away from 0: there the type's spacing may be a
    sizeable part of the stddev (float32 values around 1000 are 6e-5 apart), so
    the midpoints are used for every type.
    """
    dtype = sample.dtype
    values, counts = np.unique(sample.astype(np.float64), return_counts=True)
    m = int(counts.sum())
    if dtype.itemsize >= 4 and not _offset(scaling):
        # float32/float64 neighbours lie within 2**-24 relative: a CDF error below 1e-7.
        upper = lower = values
    else:
        stored = values.astype(dtype)
        up = np.nextafter(stored, np.array(np.inf, dtype=dtype)).astype(np.float64)
        down = np.nextafter(stored, np.array(-np.inf, dtype=dtype)).astype(np.float64)
        with np.errstate(invalid="ignore"):
            upper = np.where(np.isfinite(up), (values + up) / 2, np.inf)
            lower = np.where(np.isfinite(down), (values + down) / 2, -np.inf)
        if _offset(scaling):
            upper, lower = _clamped_ends(scaling, dtype, values, upper, lower)
    cumulative = np.cumsum(counts)
    cdf_upper = expected_cdf(scaling, upper)
    cdf_lower = cdf_upper if lower is upper else expected_cdf(scaling, lower)
    above = cumulative / m - cdf_upper
    below = cdf_lower - (cumulative - counts) / m
    statistic = float(max(np.abs(above).max(), np.abs(below).max()))
    root = math.sqrt(m)
    pvalue = kolmogorov_sf(statistic * (root + 0.12 + 0.11 / root))
    return KSResult(
        statistic=statistic,
        pvalue=pvalue,
        critical=ks_critical(m),
        alpha=KS_ALPHA,
        sample_size=m,
        stride=stride,
    )


def _clamped_ends(
    scaling: Scaling,
    dtype: np.dtype,
    values: np.ndarray,
    upper: np.ndarray,
    lower: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The vsgen stream clamps values off a mean into their range in the stored
    type (docs/stream-v1.md, section 12): the range's end values then stand for
    everything beyond them too, so their outer midpoints move to infinity.
    Where the type's spacing is coarse next to the range (float16 values
    around 1000 are 0.5 apart) that mass is visible. A tensor holding values
    beyond an end was not clamped there (Keras rounds only), and that end keeps
    its midpoint."""
    from vsgen.dtypes import interval_bounds

    value_range = scaling.value_range()
    if value_range is None or values.size == 0:
        return upper, lower
    low, high = value_range
    lo, hi = interval_bounds(dtype, low, high, open_high=scaling.distribution == "uniform")
    if values.max() <= hi:
        upper = np.where(values == hi, np.inf, upper)
    if values.min() >= lo:
        lower = np.where(values == lo, -np.inf, lower)
    return upper, lower


def _significand_bits(dtype: np.dtype) -> int:
    return {"bfloat16": 8, "float16": 11, "float32": 24, "float64": 53}[dtype.name]


def rounding_error(dtype: np.dtype) -> float:
    """Relative error bound of storing a value in ``dtype``: ``2**-p + 2**-24``
    (half an ulp of the dtype, plus float32 working precision for narrow types;
    ``2**-53`` alone for float64)."""
    bits = _significand_bits(dtype)
    return 2.0**-53 if bits == 53 else 2.0**-bits + 2.0**-24


def _smallest_subnormal(dtype: np.dtype) -> float:
    import ml_dtypes

    return float(ml_dtypes.finfo(dtype).smallest_subnormal)


# --- judging -------------------------------------------------------------------------


def _sign(passed: bool) -> str:
    return "<=" if passed else ">"


def _compared(value: float, threshold: float, digits: int = 6) -> str:
    """``"value <= threshold"`` or ``"value > threshold"``, each printed with as
    many significant digits as it takes for the printed numbers themselves to
    satisfy the printed relation (at least ``digits``; 17 always suffice)."""
    holds = value <= threshold
    for shown in range(digits, 18):
        left, right = f"{value:.{shown}g}", f"{threshold:.{shown}g}"
        if (float(left) <= float(right)) == holds and (holds or left != right):
            break
    return f"{left} {_sign(holds)} {right}"


def _finite_check(summary: Summary) -> Check:
    """No NaN or infinity anywhere in the tensor."""
    return Check(
        "finite",
        summary.nonfinite == 0,
        float(summary.nonfinite),
        0.0,
        f"{summary.nonfinite} NaN/inf values",
    )


def judge(
    summary: Summary,
    sample: np.ndarray,
    stride: int,
    scaling: Scaling,
    dtype: np.dtype,
) -> tuple[list[Check], KSResult | None]:
    """Run the checks of the module docstring; returns them and the KS result."""
    checks: list[Check] = []
    sigma = scaling.stddev
    rounding = rounding_error(dtype)
    absolute = _smallest_subnormal(dtype) / 2
    n_finite = summary.count - summary.nonfinite
    checks.append(_finite_check(summary))
    if n_finite == 0:
        return checks, None
    bound = scaling.bound if scaling.distribution == "truncated_normal" else scaling.limit
    if bound is not None and not _offset(scaling):
        allowed = bound * (1 + rounding) + absolute
        largest = max(abs(summary.min), abs(summary.max))
        what = "2s" if scaling.distribution == "truncated_normal" else "limit"
        checks.append(
            Check(
                "bounds",
                largest <= allowed,
                largest,
                allowed,
                f"max |x| = {_compared(largest, allowed)} ({what} = {bound:.6g} + dtype rounding)",
            )
        )
    elif bound is not None:
        checks.append(_range_check(summary, scaling, rounding, absolute))
    # Rounding a value v moves it by at most rounding * |v|: around a mean, the
    # mean's magnitude counts too.
    offset_rounding = rounding * abs(scaling.mean)
    mean_tolerance = (
        SIGMAS * sigma / math.sqrt(n_finite) + rounding * sigma + absolute + offset_rounding
    )
    mean_error = abs(summary.mean - scaling.mean)
    what = f"mean - {scaling.mean:.6g}" if _offset(scaling) else "mean"
    checks.append(
        Check(
            "mean",
            mean_error <= mean_tolerance,
            mean_error,
            mean_tolerance,
            f"|{what}| = {_compared(mean_error, mean_tolerance, 4)} "
            f"({SIGMAS:g} standard errors + dtype rounding)",
        )
    )
    standard_error = sigma * math.sqrt((KURTOSIS[scaling.distribution] - 1) / (4 * n_finite))
    std_tolerance = SIGMAS * standard_error + rounding * sigma + absolute + offset_rounding
    deviation = abs(summary.std - sigma)
    checks.append(
        Check(
            "std",
            deviation <= std_tolerance,
            deviation,
            std_tolerance,
            f"|std - {sigma:.6g}| = {_compared(deviation, std_tolerance, 4)} "
            f"({SIGMAS:g} standard errors + dtype rounding)",
        )
    )
    finite_sample = sample[np.isfinite(sample.astype(np.float64))]
    ks = None
    if finite_sample.size >= KS_MIN_VALUES:
        ks = ks_test(finite_sample, scaling, stride)
        checks.append(
            Check(
                "ks",
                ks.statistic <= ks.critical,
                ks.statistic,
                ks.critical,
                f"D = {_compared(ks.statistic, ks.critical, 4)} (alpha {ks.alpha:g}, "
                f"p = {ks.pvalue:.3g}, {ks.sample_size} values, every {stride})",
            )
        )
    return checks, ks


def _range_check(summary: Summary, scaling: Scaling, rounding: float, absolute: float) -> Check:
    """Values off a mean or in a range of their own: min and max inside the range
    ``[low, high]`` widened by the dtype's rounding of its ends."""
    value_range = scaling.value_range()
    assert value_range is not None
    low, high = value_range
    slack = rounding * max(abs(low), abs(high)) + absolute
    beyond = max(low - summary.min, summary.max - high, 0.0)
    passed = beyond <= slack
    interval = f"[{low:.6g}, {high:.6g}{')' if scaling.distribution == 'uniform' else ']'}"
    return Check(
        "bounds",
        passed,
        beyond,
        slack,
        f"min {summary.min:.6g}, max {summary.max:.6g} in {interval}: "
        f"{_compared(beyond, slack)} beyond it (dtype rounding allowed)",
    )


def _histogram(sample: np.ndarray, summary: Summary) -> Histogram:
    values = sample.astype(np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Histogram(edges=[], counts=[], sample_size=0)
    # Binned at half scale (exact for normal numbers), so that the span of
    # extreme values such as +-1e308 stays finite; the edges are scaled back.
    low, high = summary.min / 2, summary.max / 2
    if low == high:
        pad = max(0.25, abs(low) * 2.0**-20)
        low, high = low - pad, high + pad
    counts, edges = np.histogram(values / 2, bins=HISTOGRAM_BINS, range=(low, high))
    return Histogram(
        edges=[float(e) * 2 for e in edges],
        counts=[int(c) for c in counts],
        sample_size=values.size,
    )


def _verdict(checks: Sequence[Check], count: int) -> str:
    if any(not check.passed for check in checks):
        return NOT_CONSISTENT
    if count < MIN_VALUES:
        return TOO_FEW
    return CONSISTENT


def _expected_dict(
    scaling: Scaling, initializer: RandomInitializer, fan_shape: Sequence[int]
) -> dict[str, Any]:
    expected = scaling.as_dict()
    if initializer.uses_fans:
        expected["fan_shape"] = list(fan_shape)
        expected["layout"] = initializer.layout
        expected["input_axes"] = list(initializer.input_axes) if initializer.input_axes else None
        expected["output_axes"] = list(initializer.output_axes) if initializer.output_axes else None
    else:
        expected["initializer"] = type(initializer).__name__
    expected["kurtosis"] = KURTOSIS[scaling.distribution]
    return expected


def _report(
    chunks: Iterator[np.ndarray],
    size: int,
    dtype: np.dtype,
    scaling: Scaling,
    max_sample: int | None,
    extra_checks: list[Check],
    notes: list[str],
) -> dict[str, Any]:
    """Summarise, judge and collect the report fields that depend on the values."""
    summary, sample, stride = summarize(chunks, size, max_sample)
    checks, ks = judge(summary, sample, stride, scaling, dtype)
    checks = extra_checks + checks
    if summary.count < MIN_VALUES:
        notes.append(
            f"only {summary.count} values: below {MIN_VALUES} the checks have little power, "
            "so passing them proves little"
        )
    return {
        "summary": summary,
        "ks": ks,
        "histogram": _histogram(sample, summary),
        "checks": checks,
        "verdict": _verdict(checks, summary.count),
        "notes": notes,
    }


def verify_source(
    source: FileTensor,
    initializer: RandomInitializer | None = None,
    fan_shape: Sequence[int] | None = None,
    *,
    chunk_size: int | None = None,
    max_sample: int | None = None,
) -> VerifyReport:
    """Judge one opened tensor against ``initializer`` or, if None, its recorded provenance.

    ``fan_shape`` (explicit initializer only) computes fans from another shape,
    e.g. the full shape of which the file holds a shard.

    Raises:
        NoExpectationError: no initializer given and the file records none.
    """
    notes: list[str] = []
    record_checks: list[Check] = []
    if initializer is None:
        if fan_shape is not None:
            raise ValueError("a fan shape is only used with an explicit initializer")
        record = recorded_record(source)
        kind = record.get("kind", "variance_scaling")
        if kind == "constant":
            return _verify_constant(source, record, chunk_size, max_sample)
        if not provenance.is_sampled(record):
            raise NotJudgedError(
                f"{source.path}: tensor {source.name!r} is recorded as {str(kind)[:40]!r}, "
                "which has no distribution to check"
            )
        initializer, fans_from, record = recorded_expectation(source, record)
        source_label = "provenance"
        record_checks.append(_record_check(source, record))
        with _malformed_record(source):
            rows = record.get("rows")
            if rows:
                start, stop = (int(bound) for bound in rows)
                notes.append(f"rows {start}:{stop} of {fans_from}")
    else:
        source_label = "options"
        fans_from = normalize_shape(source.shape if fan_shape is None else tuple(fan_shape))
    scaling = initializer.scaling(fans_from)
    chunks = source.chunks(chunk_size)
    if source.size > READ_CHUNK:
        # Read the next chunk while this one is summarised (both release the
        # GIL); a tensor of one chunk is not worth a thread.
        chunks = prefetched(chunks)
    parts = _report(
        chunks,
        source.size,
        source.dtype,
        scaling,
        max_sample,
        record_checks,
        notes,
    )
    return VerifyReport(
        path=source.path,
        format=source.format,
        name=source.name,
        shape=source.shape,
        dtype=source.dtype.name,
        source=source_label,
        expected=_expected_dict(scaling, initializer, fans_from),
        **parts,
    )


def _record_check(source: FileTensor, record: dict[str, Any]) -> Check:
    """The file's shape and dtype must be the recorded ones (catches edited files)."""
    with _malformed_record(source):
        recorded_shape = (
            provenance.record_shape(record, "shape") if "shape" in record else source.shape
        )
        recorded_dtype = record.get("dtype", source.dtype.name)
        if not isinstance(recorded_dtype, str):
            raise ValueError("field 'dtype' is not a string")
    same = recorded_shape == source.shape and recorded_dtype == source.dtype.name
    return Check(
        "record",
        same,
        None,
        None,
        f"file has shape {source.shape} {source.dtype.name}; recorded "
        f"{recorded_shape} {recorded_dtype[:40]}",
    )


def _verify_constant(
    source: FileTensor,
    record: dict[str, Any],
    chunk_size: int | None,
    max_sample: int | None,
) -> VerifyReport:
    """A constant tensor (zeros, ones, ...) is consistent when every value equals the
    recorded constant rounded to the file's dtype; no statistics are needed."""
    with _malformed_record(source):
        value = record.get("value", math.nan)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("field 'value' is not a number")
        with np.errstate(over="ignore"):
            value = float(np.asarray(float(value), dtype=source.dtype).astype(np.float64))
    summary, sample, _ = summarize(source.chunks(chunk_size), source.size, max_sample)
    checks = [
        _record_check(source, record),
        _finite_check(summary),
    ]
    if summary.count > summary.nonfinite:
        equal = summary.min == value and summary.max == value
        checks.append(
            Check(
                "constant",
                equal,
                max(abs(summary.min - value), abs(summary.max - value)),
                0.0,
                f"min {summary.min:.6g}, max {summary.max:.6g}; every value must be {value:g}",
            )
        )
    verdict = NOT_CONSISTENT if any(not check.passed for check in checks) else CONSISTENT
    return VerifyReport(
        path=source.path,
        format=source.format,
        name=source.name,
        shape=source.shape,
        dtype=source.dtype.name,
        source="provenance",
        expected={"kind": "constant", "value": value},
        summary=summary,
        ks=None,
        histogram=_histogram(sample, summary),
        checks=checks,
        verdict=verdict,
        notes=[],
    )


def verify_file(
    path: str | TensorFile,
    name: str | None = None,
    initializer: RandomInitializer | None = None,
    fan_shape: Sequence[int] | None = None,
    *,
    chunk_size: int | None = None,
    max_sample: int | None = None,
) -> VerifyReport:
    """Open ``path`` (tensor ``name``) and judge it; see :func:`verify_source`."""
    source = open_tensor(path, name)
    return verify_source(
        source, initializer, fan_shape, chunk_size=chunk_size, max_sample=max_sample
    )


@dataclass(frozen=True)
class FileReport:
    """Every tensor of a file judged against its own record (``vsgen check FILE``).

    ``reports`` holds one :class:`VerifyReport` per judged tensor, in file
    order; ``not_judged`` the tensors that could not be judged and why
    (not a float tensor, no record (a tensor vsgen did not write), a record
    without a distribution): they do not change the verdict. ``missing`` holds
    the tensors the file's provenance records but the file lacks. The verdict is
    ``NOT consistent`` if any judged tensor is or a recorded tensor is missing,
    ``too few values to judge`` if every judged tensor is, and ``consistent``
    otherwise.
    """

    path: str
    format: str
    reports: list[VerifyReport]
    not_judged: list[dict[str, str]] = field(default_factory=list)
    #: Tensors the file's provenance records but the file no longer holds.
    missing: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """The file's verdict (see the class docstring)."""
        verdicts = [report.verdict for report in self.reports]
        if NOT_CONSISTENT in verdicts or self.missing:
            return NOT_CONSISTENT
        if verdicts and all(verdict == TOO_FEW for verdict in verdicts):
            return TOO_FEW
        return CONSISTENT

    @property
    def consistent(self) -> bool:
        """False only if some judged tensor is ``NOT consistent``."""
        return self.verdict != NOT_CONSISTENT

    @property
    def exit_code(self) -> int:
        """0 unless some tensor is NOT consistent (1)."""
        return 0 if self.consistent else 1

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types: path, format, verdict, consistent, tensors, not_judged."""
        return {
            "path": self.path,
            "format": self.format,
            "verdict": self.verdict,
            "consistent": self.consistent,
            "tensors": [report.as_dict() for report in self.reports],
            "not_judged": list(self.not_judged),
            "missing": list(self.missing),
        }

    def to_json(self) -> str:
        """``as_dict()`` as indented JSON."""
        return json.dumps(self.as_dict(), indent=2)


def verify_tensors(
    path: str | TensorFile,
    initializer: RandomInitializer | None = None,
    *,
    chunk_size: int | None = None,
    max_sample: int | None = None,
) -> FileReport:
    """Judge every tensor of ``path`` (or of an opened file) against its own record
    (or ``initializer``), and the file against its whole record: without an
    ``initializer``, a tensor the provenance records but the file lacks makes it
    ``NOT consistent`` (``missing``).

    Tensors that cannot be judged (not float, no record, a record without a
    distribution) are listed in ``not_judged``; if none can be judged and none is
    missing, the reason for the first is raised.

    Raises:
        NoExpectationError: no tensor has a record and no initializer was given.
        ValueError: the file is unreadable, holds no tensors, or a record is malformed.
    """
    tensor_file = path if isinstance(path, TensorFile) else open_file(path)
    path = tensor_file.path
    missing = missing_tensors(tensor_file) if initializer is None else []
    if not tensor_file.tensors and not missing:
        raise ValueError(f"{path} holds no tensors")
    reports: list[VerifyReport] = []
    not_judged: list[dict[str, str]] = []
    errors: list[ValueError] = []
    cache: dict[str, Any] = {}
    for tensor in tensor_file.tensors:
        try:
            if tensor.dtype not in _READABLE:
                raise NotJudgedError(f"{tensor.name!r} is {tensor.dtype}, not a float tensor")
            source = _source(tensor_file, tensor, cache)
            reports.append(
                verify_source(source, initializer, chunk_size=chunk_size, max_sample=max_sample)
            )
        except (NoExpectationError, NotJudgedError) as error:
            errors.append(error)
            not_judged.append({"name": tensor.name, "reason": str(error)})
    if not reports and not missing:
        raise errors[0]
    return FileReport(path, tensor_file.format, reports, not_judged, missing)


def verify_array(
    values: np.ndarray,
    initializer: RandomInitializer,
    fan_shape: Sequence[int] | None = None,
    *,
    chunk_size: int | None = None,
    max_sample: int | None = None,
) -> VerifyReport:
    """Judge an in-memory array against ``initializer`` (fans from ``fan_shape`` or its shape)."""
    array = np.asarray(values)
    dtype = _readable_dtype(array.dtype, "array", "array")
    flat = np.ravel(array)
    step = max(1, READ_CHUNK if chunk_size is None else int(chunk_size))
    fans_from = normalize_shape(array.shape if fan_shape is None else tuple(fan_shape))
    scaling = initializer.scaling(fans_from)
    chunks = (flat[start : start + step] for start in range(0, flat.size, step))
    parts = _report(chunks, flat.size, dtype, scaling, max_sample, [], [])
    return VerifyReport(
        path=None,
        format="array",
        name="array",
        shape=tuple(array.shape),
        dtype=dtype.name,
        source="options",
        expected=_expected_dict(scaling, initializer, fans_from),
        **parts,
    )
