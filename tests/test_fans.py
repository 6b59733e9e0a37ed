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


def test_parse_integer_accepts_ascii_digits_and_names_the_argument():
    from vsgen.fans import parse_integer

    assert parse_integer(" 42 ", "seed") == 42
    assert parse_integer("-3", "axis", negative=True) == -3
    for text, negative, kind in [
        ("-3", False, "a non-negative integer"),
        ("1_0", True, "an integer"),
        ("\u0663", False, "a non-negative integer"),  # ARABIC-INDIC DIGIT THREE
        ("+4", True, "an integer"),
    ]:
        with pytest.raises(ValueError) as caught:
            parse_integer(text, "seed", negative=negative)
        assert str(caught.value) == (
            f"Argument `seed` must be {kind} written with the digits 0-9. Received: seed={text!r}"
        )


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((3, 3, 64, 128), True),  # Keras (kh, kw, in, out)
        ((11, 11, 12, 12), True),  # the largest kernel side, just below both channels
        ((3, 64, 128), True),  # rank 3: (k, in, out)
        ((1, 1, 1, 2, 3), True),  # rank 5
        ((64, 3, 7, 7), False),  # PyTorch (out, in, kh, kw)
        ((32, 1, 3, 3), False),
        ((12, 12, 64, 64), False),  # kernel side above 11
        ((3, 5, 4, 128), False),  # a kernel side (5) not below a channel count (4)
        ((3, 3, 3, 128), False),  # equal is not below
        ((3, 3), False),  # rank 2 is dense, not conv
        ((1, 1, 1, 1, 2, 3), False),  # rank 6
    ],
)
def test_looks_channels_last(shape, expected):
    from vsgen.fans import looks_channels_last

    assert looks_channels_last(shape) is expected


def test_resolve_rows_fills_the_open_ends():
    from vsgen.fans import resolve_rows

    assert resolve_rows((10, 4), (None, None)) == (0, 10)
    assert resolve_rows((10, 4), (None, 3)) == (0, 3)
    assert resolve_rows((10, 4), (2, None)) == (2, 10)
    assert resolve_rows((10, 4), (2, 5)) == (2, 5)
    with pytest.raises(ValueError, match="a scalar has no rows"):
        resolve_rows((), (None, None))


@pytest.mark.parametrize(
    ("shape", "itemsize", "target", "expected"),
    [
        # 10 floats of 4 bytes = 40 bytes per row fit in 100; 100 // 40 = 2 rows
        ((100, 10), 4, 100, (2, 10)),
        # everything fits: the block is the whole tensor, size-1 axes stay 1
        ((7, 1, 3), 4, 1 << 20, (7, 1, 3)),
        # the last axis alone is too big: cut to 64 // 8 = 8 elements, earlier axes 1
        ((5, 6, 100), 8, 64, (1, 1, 8)),
        # a row of 3 * 4 = 12 bytes; 30 // 12 = 2 rows of axis 1, axis 0 cut to 1
        ((4, 5, 3), 4, 30, (1, 2, 3)),
        # a zero-size axis counts as 1; the block never has a zero
        ((0, 5), 4, 1 << 20, (1, 5)),
        # an item larger than the target still gives one element
        ((3, 2), 16, 8, (1, 1)),
    ],
)
def test_auto_block_shape_derived_by_hand(shape, itemsize, target, expected):
    from vsgen.fans import auto_block_shape

    block = auto_block_shape(shape, itemsize, target)
    assert block == expected
    assert all(type(b) is int for b in block)
