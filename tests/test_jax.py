"""``vsgen.jax`` and JAX's options in the core, against the real jax package.

References: ``jax.nn.initializers``'s own fans (``_compute_fans``), its own
computed stddev (read exactly by replacing its random draws with ones, in a
float64 subprocess), and its own samples (two-sample KS with fixed keys).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy import stats

os.environ.setdefault("JAX_PLATFORMS", "cpu")
jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from jax._src.nn.initializers import _compute_fans as jax_compute_fans  # noqa: E402

import vsgen  # noqa: E402
import vsgen.jax as vj  # noqa: E402

AXES_CASES = [
    ((64, 32), -2, -1, ()),
    ((3, 3, 16, 32), -2, -1, ()),
    ((3, 3, 16, 32), -2, -1, 0),
    ((5, 3, 3, 16, 32), -2, -1, (0,)),
    ((16, 4, 8), 0, (1, 2), ()),
    ((16, 4, 8), (0, 1), 2, ()),
    ((7, 16, 4, 8), 1, (2, 3), 0),
    ((32, 16, 3, 3), 1, 0, ()),  # torch-like (out, in, kh, kw)
    ((2, 6, 5, 4, 3), (1, 2), -1, (0,)),
    ((9, 5), 0, 1, ()),
]
MODES = ["fan_in", "fan_out", "fan_avg", "fan_geo_avg"]


@pytest.mark.parametrize(("shape", "in_axis", "out_axis", "batch_axis"), AXES_CASES)
def test_fans_equal_jax(shape, in_axis, out_axis, batch_axis):
    expected = jax_compute_fans(shape, in_axis, out_axis, batch_axis)
    ours = vsgen.compute_fans(shape, in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis)
    assert ours == expected
    init = vsgen.VarianceScaling(in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis)
    assert init.fans(shape) == expected


def test_batch_axis_alone_keeps_the_layout_axes():
    assert vsgen.compute_fans((4, 3, 3, 16, 32), batch_axis=0) == (144, 288)
    # torch layout (out, in, kh, kw, ...): its axes are 1 and 0; a batch axis
    # elsewhere leaves the receptive field.
    assert vsgen.compute_fans((32, 16, 3, 3, 4), "torch", batch_axis=-1) == (
        jax_compute_fans((32, 16, 3, 3, 4), 1, 0, -1)
    )
    with pytest.raises(ValueError, match="share an axis"):
        vsgen.compute_fans((4, 32, 16, 3), "torch", batch_axis=0)
    with pytest.raises(ValueError, match="in_axis"):
        vsgen.compute_fans((5,), batch_axis=0)
    with pytest.raises(ValueError, match="share an axis"):
        vsgen.compute_fans((4, 5, 6), in_axis=0, out_axis=1, batch_axis=1)
    with pytest.raises(ValueError, match="cannot be combined"):
        vsgen.VarianceScaling(input_axes=[0], output_axes=[1], batch_axis=0)


_JAX_STDDEV_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax._src.nn import initializers as jinit

    # Replace every random draw by ones: what is left is JAX's own multiplier.
    jinit.random.uniform = lambda key, shape, dtype, *a, **k: jnp.ones(shape, dtype)
    jinit.random.normal = lambda key, shape, dtype, *a, **k: jnp.ones(shape, dtype)
    jinit.random.truncated_normal = (
        lambda key, lo, hi, shape, dtype, *a, **k: jnp.ones(shape, dtype)
    )
    jinit._complex_uniform = lambda key, shape, dtype: jnp.ones(shape, dtype)
    jinit._complex_truncated_normal = lambda key, upper, shape, dtype: jnp.ones(shape, dtype)
    results = []
    for case in json.load(sys.stdin):
        init = jinit.variance_scaling(case["scale"], case["mode"], case["distribution"],
                                      case["in_axis"], case["out_axis"], case["batch_axis"])
        out = init(jax.random.key(0), tuple(case["shape"]), jnp.dtype(case["dtype"]))
        results.append(float(jnp.abs(out.reshape(-1)[0])))
    print(json.dumps(results))
    """
)


def _as_json_axes(axes):
    return axes if isinstance(axes, int) else list(axes)


def test_multiplier_equals_jax_exactly():
    """JAX's multiplier (its stddev, stddev / 0.8796..., sqrt(3 v), ...) for every
    mode, distribution and axis case, float64 and complex128, equals vsgen's."""
    cases = []
    for shape, in_axis, out_axis, batch_axis in AXES_CASES:
        for mode in MODES:
            for distribution in ("truncated_normal", "normal", "uniform"):
                for dtype in ("float64", "complex128"):
                    cases.append(
                        {
                            "shape": list(shape),
                            "in_axis": _as_json_axes(in_axis),
                            "out_axis": _as_json_axes(out_axis),
                            "batch_axis": _as_json_axes(batch_axis),
                            "scale": 1.7,
                            "mode": mode,
                            "distribution": distribution,
                            "dtype": dtype,
                        }
                    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", _JAX_STDDEV_SCRIPT],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    jax_values = json.loads(result.stdout)
    mismatches = []
    for case, expected in zip(cases, jax_values, strict=True):
        distribution = {"normal": "untruncated_normal"}.get(case["distribution"])
        init = vsgen.VarianceScaling(
            case["scale"],
            case["mode"],
            distribution or case["distribution"],
            in_axis=case["in_axis"],
            out_axis=case["out_axis"],
            batch_axis=case["batch_axis"],
        )
        scaling = init.scaling(case["shape"], case["dtype"])
        if case["distribution"] == "uniform" and case["dtype"] == "complex128":
            ours = scaling.stddev  # JAX: unit-variance disk times sqrt(v)
        elif case["distribution"] == "uniform":
            ours = scaling.limit
        elif case["distribution"] == "truncated_normal":
            ours = scaling.pre_truncation_std
        else:
            ours = scaling.stddev
        if ours != expected:
            mismatches.append((case, ours, expected))
    # fan_geo_avg: JAX takes (fan_in * fan_out) ** 0.5 (libm pow), vsgen the
    # correctly rounded sqrt; allow those cases one ulp, all others exact.
    for case, ours, expected in mismatches:
        assert case["mode"] == "fan_geo_avg", (case, ours, expected)
        assert abs(ours - expected) <= math.ulp(expected), (case, ours, expected)
    assert len(mismatches) <= len(cases) // 20


@pytest.mark.parametrize("n", [0, 1, 42, 2**31 + 7, 2**32 - 1])
def test_key_maps_to_the_documented_seed(n):
    assert vj.key_to_seed(jax.random.key(n)) == n
    assert vj.key_to_seed(jax.random.PRNGKey(n)) == n
    init = vj.variance_scaling(2.0, "fan_in", "truncated_normal")
    ours = np.asarray(init(jax.random.key(n), (24, 16)))
    expected = vsgen.VarianceScaling(2.0, "fan_in", "truncated_normal", seed=n)((24, 16))
    assert ours.tobytes() == expected.tobytes()


def test_split_keys_give_the_documented_word_seeds():
    keys = jax.random.split(jax.random.key(3), 4)
    seeds = [vj.key_to_seed(k) for k in keys]
    assert len(set(seeds)) == 4
    for key, seed in zip(keys, seeds, strict=True):
        hi, lo = (int(w) for w in np.asarray(jax.random.key_data(key)))
        assert seed == (hi << 32) | lo


def test_other_key_implementations_fold_their_words():
    key = jax.random.key(5, impl="rbg")
    words = [int(w) for w in np.asarray(jax.random.key_data(key)).ravel()]
    assert len(words) == 4
    mask = (1 << 64) - 1
    h = 0
    for word in words:  # the documented fold, written out independently
        z = ((h ^ word) + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        h = z ^ (z >> 31)
    assert vj.key_to_seed(key) == h


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64])
def test_returns_jax_arrays_of_the_dtype(dtype):
    init = vj.he_normal(in_axis=0, out_axis=(1, 2))
    values = init(jax.random.key(1), (8, 2, 3), dtype)
    assert isinstance(values, jax.Array)
    assert values.dtype == dtype and values.shape == (8, 2, 3)
    expected = vsgen.HeNormal(seed=1, in_axis=0, out_axis=(1, 2))((8, 2, 3), jnp.dtype(dtype).name)
    assert np.asarray(values).tobytes() == expected.tobytes()


def test_default_dtype_is_jax_default_float():
    values = vj.lecun_uniform()(jax.random.key(0), (4, 4))
    assert values.dtype == jnp.float32


def test_jit_and_vmap_give_the_eager_values():
    init = vj.glorot_uniform(batch_axis=0)
    key = jax.random.key(11)
    eager = init(key, (3, 8, 4))
    jitted = jax.jit(lambda k: init(k, (3, 8, 4)))(key)
    assert np.asarray(jitted).tobytes() == np.asarray(eager).tobytes()
    keys = jax.random.split(key, 3)
    batched = jax.vmap(lambda k: init(k, (3, 8, 4)))(keys)
    for i in range(3):
        assert np.asarray(batched[i]).tobytes() == np.asarray(init(keys[i], (3, 8, 4))).tobytes()


def test_normal_means_untruncated_as_in_jax():
    values = np.asarray(vj.variance_scaling(1.0, "fan_in", "normal")(jax.random.key(2), (64, 4096)))
    # An untruncated normal exceeds 2 stddevs 4.55 % of the time.
    beyond = np.mean(np.abs(values) > 2 * math.sqrt(1 / 64))
    assert beyond == pytest.approx(0.0455, abs=0.003)


def test_errors():
    with pytest.raises(ValueError, match="distribution"):
        vj.variance_scaling(1.0, "fan_in", "gamma")
    with pytest.raises(ValueError, match="mode"):
        vj.variance_scaling(1.0, "fan_mid", "uniform")
    with pytest.raises(ValueError, match="scale"):
        vj.variance_scaling(-1.0, "fan_in", "uniform")
    with pytest.raises(ValueError, match="dtype"):
        vj.he_normal()(jax.random.key(0), (2, 2), jnp.int32)


SAMPLE_CASES = [
    ("truncated_normal", "float32"),
    ("normal", "float32"),
    ("uniform", "float32"),
    ("truncated_normal", "complex64"),
    ("normal", "complex64"),
    ("uniform", "complex64"),
]


@pytest.mark.parametrize(("distribution", "dtype"), SAMPLE_CASES)
def test_samples_match_jax_samples(distribution, dtype):
    """Two-sample KS between JAX's own initializer and vsgen.jax, same options."""
    shape, in_axis, out_axis, batch_axis = (4, 48, 8, 32), (1, 2), -1, 0
    options = (1.3, "fan_geo_avg", distribution, in_axis, out_axis, batch_axis)
    theirs = np.asarray(
        jax.nn.initializers.variance_scaling(*options, dtype=dtype)(jax.random.key(7), shape)
    ).ravel()
    ours = np.asarray(vj.variance_scaling(*options, dtype=dtype)(jax.random.key(7), shape)).ravel()
    assert ours.dtype == theirs.dtype
    if np.iscomplexobj(ours):
        for part in (np.real, np.imag, np.abs):
            assert stats.ks_2samp(part(ours), part(theirs)).pvalue > 1e-3
        assert np.abs(ours).max() <= np.abs(theirs).max() * 1.05 or distribution == "normal"
    else:
        assert stats.ks_2samp(ours, theirs).pvalue > 1e-3
    assert ours.var() == pytest.approx(theirs.var(), rel=0.03)


# --- normal, truncated_normal, uniform: JAX's fixed-parameter initializers ----------

FIXED_CASES = [
    ("normal", 0.02, "float32"),
    ("normal", 3.0, "float64"),
    ("normal", 0.5, "complex64"),
    ("truncated_normal", 0.02, "float32"),
    ("truncated_normal", 1.5, "bfloat16"),
    ("uniform", 0.1, "float32"),
    ("uniform", 4.0, "float16"),
]


def _core(name: str, parameter: float):
    return {
        "normal": lambda seed: vsgen.RandomNormal(0.0, parameter, seed),
        "truncated_normal": lambda seed: vsgen.TruncatedNormal(0.0, parameter, seed),
        "uniform": lambda seed: vsgen.RandomUniform(0.0, parameter, seed),
    }[name]


@pytest.mark.parametrize(("name", "parameter", "dtype"), FIXED_CASES)
def test_fixed_initializers_are_the_core_classes_bytes(name, parameter, dtype):
    if dtype in ("float64",) and not jax.config.jax_enable_x64:
        dtype = "float32"
    init = getattr(vj, name)(parameter)
    for n in (0, 5, 2**32 - 1):
        values = init(jax.random.key(n), (17, 9), dtype)
        assert values.dtype == jnp.dtype(dtype)
        assert np.asarray(values).tobytes() == _core(name, parameter)(n)((17, 9), dtype).tobytes()
    jitted = jax.jit(lambda k: init(k, (17, 9), dtype))(jax.random.key(5))
    assert (
        np.asarray(jitted).tobytes()
        == np.asarray(init(jax.random.key(5), (17, 9), dtype)).tobytes()
    )


@pytest.mark.parametrize(("name", "parameter", "dtype"), FIXED_CASES)
def test_fixed_initializers_match_jax_samples(name, parameter, dtype):
    """Two-sample KS against jax.nn.initializers' own function, same arguments."""
    if dtype == "float64" and not jax.config.jax_enable_x64:
        dtype = "float32"
    shape = (400, 500)
    # JAX computes narrow types in their own precision (the unit value rounded,
    # then multiplied and rounded again); vsgen rounds its float32 value once.
    # So a float16/bfloat16 reference is JAX's float32 sample rounded once.
    wide = "float32" if dtype in ("float16", "bfloat16") else dtype
    theirs = np.asarray(
        getattr(jax.nn.initializers, name)(parameter)(jax.random.key(3), shape, wide)
    )
    theirs = theirs.astype(jnp.dtype(dtype))
    ours = np.asarray(getattr(vj, name)(parameter)(jax.random.key(3), shape, dtype))
    parts = (
        [(ours.real, theirs.real), (ours.imag, theirs.imag)]
        if ours.dtype.kind == "c"
        else [(ours, theirs)]
    )
    for mine, jaxs in parts:
        mine = mine.astype(np.float64).ravel()
        jaxs = jaxs.astype(np.float64).ravel()
        assert stats.ks_2samp(mine, jaxs).pvalue > 1e-3
    if name == "uniform":
        wide = ours.astype(np.float64)
        assert wide.min() >= 0.0 and wide.max() < parameter  # JAX's U[0, scale)
    if name == "truncated_normal":
        assert np.abs(ours.astype(np.float64)).max() <= 2 * parameter


def test_fixed_initializer_errors_follow_jax():
    for name in ("truncated_normal", "uniform"):
        with pytest.raises(ValueError):
            getattr(jax.nn.initializers, name)()(jax.random.key(0), (2, 2), jnp.complex64)
        with pytest.raises(ValueError, match="real tensors only"):
            getattr(vj, name)()(jax.random.key(0), (2, 2), jnp.complex64)
    with pytest.raises(ValueError, match="cut at 2 stddevs"):
        vj.truncated_normal(0.1, lower=-3.0, upper=3.0)
    with pytest.raises(ValueError, match="Argument `scale` must be a positive"):
        vj.uniform(0.0)
    with pytest.raises(ValueError, match="Argument `stddev` must be a positive"):
        vj.normal(-1.0)


_X64_SCRIPT = textwrap.dedent(
    """
    import json, warnings, jax, jax.numpy as jnp, numpy as np
    import vsgen, vsgen.jax as vj
    jax.config.update("jax_enable_x64", {x64})
    key = jax.random.key(3)
    out = {{}}
    cases = {{
        "he_normal": (lambda: vj.he_normal(), lambda: jax.nn.initializers.he_normal(), "float64"),
        "normal": (lambda: vj.normal(0.5), lambda: jax.nn.initializers.normal(0.5), "complex128"),
        "uniform": (lambda: vj.uniform(2.0), lambda: jax.nn.initializers.uniform(2.0), "float64"),
    }}
    for name, (ours, theirs, dtype) in cases.items():
        row = {{}}
        for label, make in (("vsgen", ours), ("jax", theirs)):
            for mode in ("eager", "jit"):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    init = make()
                    call = lambda k: init(k, (4, 4), dtype)
                    values = jax.jit(call)(key) if mode == "jit" else call(key)
                row[f"{{label}}-{{mode}}"] = {{
                    "dtype": str(values.dtype),
                    "warnings": sorted(
                        {{str(w.message) for w in caught if w.category is UserWarning}}
                    ),
                    "bytes": np.asarray(values).tobytes().hex(),
                }}
        out[name] = row
    expected = vsgen.HeNormal(seed=3)((4, 4), "float32" if not {x64} else "float64")
    out["core"] = expected.tobytes().hex()
    print(json.dumps(out))
    """
)


def _x64_run(x64: bool) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", _X64_SCRIPT.format(x64=x64)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_x64_off_gives_32_bit_values_with_jaxs_warning_eagerly_and_under_jit():
    found = _x64_run(False)
    for name, narrow in (("he_normal", "float32"), ("normal", "complex64"), ("uniform", "float32")):
        row = found[name]
        wide = "float64" if narrow == "float32" else "complex128"
        jax_messages = set(row["jax-eager"]["warnings"])
        message = (
            f"Explicitly requested dtype {wide} is not available, and will be truncated to "
            f"dtype {narrow}."
        )
        assert any(m.startswith(message) for m in jax_messages)  # what jax.nn says
        for mode in ("eager", "jit"):
            ours = row[f"vsgen-{mode}"]
            assert ours["dtype"] == narrow == row[f"jax-{mode}"]["dtype"]
            assert ours["warnings"] and set(ours["warnings"]) <= jax_messages
            assert any(m.startswith(message) for m in ours["warnings"])
        assert row["vsgen-eager"]["bytes"] == row["vsgen-jit"]["bytes"]
    # The float32 values are those of a float32 request.
    assert found["he_normal"]["vsgen-eager"]["bytes"] == found["core"]


def test_x64_on_keeps_64_bit_values_without_a_warning():
    found = _x64_run(True)
    for name, wide in (("he_normal", "float64"), ("normal", "complex128"), ("uniform", "float64")):
        for mode in ("eager", "jit"):
            ours = found[name][f"vsgen-{mode}"]
            assert ours["dtype"] == wide and ours["warnings"] == []
    assert found["he_normal"]["vsgen-eager"]["bytes"] == found["core"]


def test_presets_are_the_initializer_modules_triples():
    from vsgen.initializer import PRESETS

    for name in (
        "glorot_normal",
        "glorot_uniform",
        "he_normal",
        "he_uniform",
        "lecun_normal",
        "lecun_uniform",
    ):
        values = getattr(vj, name)()(jax.random.key(4), (12, 10))
        expected = PRESETS[name](seed=4)((12, 10))
        assert np.asarray(values).tobytes() == expected.tobytes()
