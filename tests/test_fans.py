"""Fans and shape parsing, checked against hand-derived values."""

from __future__ import annotations

import pytest

from vsgen.fans import compute_fans, normalize_shape, parse_axes, parse_shape


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((), (1, 1)),
        ((7,), (7, 7)),
        ((512, 256), (512, 256)),
        # conv kernel (kh, kw, in, out): receptive field 3*3 = 9
        ((3, 3, 64, 128), (64 * 9, 128 * 9)),
        ((5, 2, 3, 4, 6), (4 * 30, 6 * 30)),
        ((0, 5), (0, 5)),
    ],
)
def test_keras_layout(shape, expected):
    assert compute_fans(shape) == expected


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((256, 512), (512, 256)),  # torch Linear weight is (out, in)
        ((128, 64, 3, 3), (64 * 9, 128 * 9)),  # Conv2d weight (out, in, kh, kw)
        ((7,), (7, 7)),
        ((), (1, 1)),
    ],
)
def test_torch_layout(shape, expected):
    assert compute_fans(shape, layout="torch") == expected


def test_explicit_axes():
    assert compute_fans((2, 3, 5, 7), input_axes=[0, 1], output_axes=[-1]) == (6, 7)
    assert compute_fans((2, 3), input_axes=[], output_axes=[0, 1]) == (1, 6)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"input_axes": [0]}, "together"),
        ({"input_axes": [5], "output_axes": [0]}, "out of range"),
        ({"input_axes": [0, 0], "output_axes": [1]}, "repeats"),
        ({"layout": "caffe"}, "layout"),
    ],
)
def test_bad_fan_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        compute_fans((2, 3), **kwargs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512,256", (512, 256)),
        ("512x256", (512, 256)),
        ("3, 3, 64, 128", (3, 3, 64, 128)),
        ("[4, 5]", (4, 5)),
        ("(9,)", (9,)),
        ("()", ()),
        ("0,3", (0, 3)),
    ],
)
def test_parse_shape(text, expected):
    assert parse_shape(text) == expected


@pytest.mark.parametrize("text", ["", ",", "-1", "0.5", "abc", "1,,2", "2x", "1;2"])
def test_parse_shape_rejects(text):
    with pytest.raises(ValueError, match="invalid shape"):
        parse_shape(text)


def test_shape_limits():
    with pytest.raises(ValueError, match="dimensions"):
        normalize_shape((1,) * 40)
    with pytest.raises(ValueError, match="elements"):
        normalize_shape((2**40, 2**40))
    with pytest.raises(TypeError):
        normalize_shape((2.5, 3))
    with pytest.raises(TypeError):
        normalize_shape((True, 3))


def test_parse_axes():
    assert parse_axes("0,1,-1", "--in-axes") == (0, 1, -1)
    with pytest.raises(ValueError, match="--in-axes"):
        parse_axes("a", "--in-axes")


def test_parse_shape_edge_spellings():
    assert parse_shape("[]") == ()
    assert parse_shape("2,3,") == (2, 3)  # a trailing comma, as in "(2, 3,)"
    assert parse_shape("(2, 3,)") == (2, 3)
    for text in ("2X", "X2", "4x5X"):
        with pytest.raises(ValueError, match="invalid shape"):
            parse_shape(text)
    with pytest.raises(ValueError) as caught:
        parse_shape("abc")
    assert str(caught.value) == (
        "invalid shape 'abc': expected non-negative integers (digits 0-9) separated by ',' or 'x', "
        "e.g. 512,256 or 3x3x64x128 ('()' for a scalar)"
    )


def test_explicit_axes_at_the_ends_of_the_range():
    # Negative axes count from the end: -rank is the first axis.
    assert compute_fans((2, 3), input_axes=[-2], output_axes=[-1]) == (2, 3)
    assert compute_fans((2, 3, 5), input_axes=[-3, 1], output_axes=[2]) == (6, 5)
    for axis in (2, -3):
        with pytest.raises(ValueError) as caught:
            compute_fans((2, 3), input_axes=[axis], output_axes=[1])
        assert str(caught.value) == (
            f"Argument `input_axes` has axis {axis}, out of range for a rank-2 shape. "
            f"Received: input_axes=[{axis}]"
        )


@pytest.mark.parametrize("axis", [True, 1.0, "1"])
def test_explicit_axes_must_be_integers(axis):
    with pytest.raises(TypeError) as caught:
        compute_fans((2, 3), input_axes=[0], output_axes=[axis])
    assert str(caught.value) == (
        f"Argument `output_axes` must be a list of integers. Received: output_axes=[{axis!r}]"
    )


def test_parse_axes_spellings():
    assert parse_axes("[0, 1]", "--in-axes") == (0, 1)
    assert parse_axes("(2)", "--out-axes") == (2,)
    assert parse_axes(" -1 ", "--out-axes") == (-1,)
    for text in ("1X", "X1", "0,1x"):
        with pytest.raises(ValueError, match="invalid --in-axes"):
            parse_axes(text, "--in-axes")


def test_normalize_shape_forms():
    import numpy as np

    assert normalize_shape(7) == (7,)
    assert normalize_shape(iter([2, 3])) == (2, 3)
    assert normalize_shape(d for d in (4, 5)) == (4, 5)
    dims = normalize_shape([np.int64(2), np.uint8(3)])  # anything with __index__
    assert dims == (2, 3) and all(type(d) is int for d in dims)
    assert normalize_shape((1,) * 32) == (1,) * 32  # MAX_RANK dimensions are fine
    assert normalize_shape((2**63 - 1,)) == (2**63 - 1,)  # the largest signed 64-bit count


@pytest.mark.parametrize(
    ("shape", "kind", "message"),
    [
        (3.5, TypeError, "Argument `shape` must be a sequence of integers. Received: shape=3.5"),
        (True, TypeError, "Argument `shape` must be a sequence of integers. Received: shape=True"),
        ((2, 2.5), TypeError,
         "Argument `shape` must contain integers only. Received: shape=(2, 2.5)"),
        ((2, -1), ValueError,
         "Argument `shape` must not contain negative sizes. Received: shape=(2, -1)"),
    ],
)  # fmt: skip
def test_normalize_shape_messages(shape, kind, message):
    with pytest.raises(kind) as caught:
        normalize_shape(shape)
    assert str(caught.value) == message


def test_axis_fans_follow_jax_s_rule_derived_by_hand():
    from vsgen.fans import axis_fans

    # r = product of the axes named nowhere; fan_in = prod(in) * r, fan_out = prod(out) * r
    assert axis_fans((3, 3, 5, 7)) == (5 * 9, 7 * 9)  # in -2, out -1, r = 3 * 3
    assert axis_fans((2, 4, 5, 6), in_axis=1, out_axis=3, batch_axis=0) == (4 * 5, 6 * 5)
    assert axis_fans((2, 3, 4, 5), in_axis=(0, 1), out_axis=-1) == (2 * 3 * 4, 5 * 4)
    assert axis_fans((8, 16), in_axis=0, out_axis=1, batch_axis=()) == (8, 16)
    with pytest.raises(ValueError) as caught:
        axis_fans((3, 4), in_axis=0, out_axis=-2)
    assert str(caught.value) == (
        "Arguments `in_axis`, `out_axis` and `batch_axis` must not share an axis. Received: "
        "in_axis=0, out_axis=-2, batch_axis=()"
    )
    # compute_fans takes the layout's defaults for the axis it is not given
    assert compute_fans((3, 3, 5, 7), in_axis=-2) == (45, 63)
    assert compute_fans((7, 5, 3, 3), layout="torch", in_axis=1) == (5 * 9, 7 * 9)  # out 0
