import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flopcast.config import CodecConfig
from flopcast.encoding.codec import LLMTimeCodec, fit_alpha
from flopcast.errors import DataError, FlopcastError

values = arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 4)),
                elements=st.floats(0, 500, allow_nan=False, allow_infinity=False))


def test_reference_format():
    c = LLMTimeCodec(CodecConfig(), alpha=1.0)
    assert c.encode(np.array([[0.25, 1.5], [0.27, 1.47]])) == "0.25,1.50;0.27,1.47;"


def test_alpha_scales_and_decodes_to_original_units():
    x = np.array([[2.0, 4.0], [6.0, 8.0]])
    c = LLMTimeCodec(CodecConfig(), alpha=2.0)
    text = c.encode(x)
    assert text == "1.00,2.00;3.00,4.00;"
    np.testing.assert_allclose(c.decode(text, 2).values, x)


@settings(max_examples=200, deadline=None)
@given(values, st.integers(0, 4))
def test_roundtrip_is_rounding(x, decimals):
    c = LLMTimeCodec(CodecConfig(decimals=decimals), alpha=1.0)
    res = c.decode(c.encode(x), x.shape[1])
    assert res.ok and res.n_steps == len(x)
    np.testing.assert_array_equal(res.values, np.round(x, decimals))


@settings(max_examples=200, deadline=None)
@given(values, st.integers(0, 4))
def test_roundtrip_without_decimal_point(x, decimals):
    c = LLMTimeCodec(CodecConfig(decimals=decimals, drop_decimal_point=True), alpha=1.0)
    text = c.encode(x)
    assert "." not in text
    np.testing.assert_allclose(c.decode(text, x.shape[1]).values, np.round(x, decimals), rtol=0,
                               atol=1e-9 * (1 + x.max()))


@settings(max_examples=100, deadline=None)
@given(values, st.floats(0.01, 100))
def test_roundtrip_with_alpha(x, alpha):
    c = LLMTimeCodec(CodecConfig(), alpha=alpha)
    np.testing.assert_allclose(c.decode(c.encode(x), x.shape[1]).values, np.round(x / alpha, 2) * alpha, rtol=1e-12,
                               atol=1e-12)


def test_no_ceiling_values_above_ten():
    c = LLMTimeCodec(CodecConfig(), alpha=1.0)
    text = c.encode(np.array([[12.346, 123.4]]))
    assert text == "12.35,123.40;"
    assert c.decode(text, 2).values[0, 1] == 123.4


def test_drop_point_format():
    c = LLMTimeCodec(CodecConfig(drop_decimal_point=True), alpha=1.0)
    assert c.encode(np.array([[0.05, 1.5]])) == "5,150;"


def test_fit_alpha_percentile_maps_to_target():
    train = np.linspace(0, 100, 1001)
    a = fit_alpha(train, CodecConfig(percentile=99.7, target=10))
    assert a == pytest.approx(np.percentile(train, 99.7) / 10)
    assert fit_alpha(train, CodecConfig(scale_mode="none")) == 1.0


def test_per_series_alpha_from_context_only():
    c = LLMTimeCodec(CodecConfig(scale_mode="per_series"))
    a = np.array([[1.0], [2.0], [3.0]])
    assert c.series_alpha(a) == pytest.approx(np.percentile(a, 99.7) / 10)
    assert c.series_alpha(a * 10) == pytest.approx(10 * c.series_alpha(a))


def test_global_codec_without_alpha_explains():
    with pytest.raises(FlopcastError, match="fit"):
        LLMTimeCodec(CodecConfig()).encode(np.ones((2, 2)))


@pytest.mark.parametrize("bad", [np.array([[-1.0, 1.0]]), np.array([[np.nan, 1.0]]), np.ones((2, 2, 2))])
def test_encode_rejects_bad_input(bad):
    with pytest.raises(DataError):
        LLMTimeCodec(CodecConfig(), alpha=1.0).encode(bad)


@pytest.mark.parametrize(
    "text, expect_rows, n_valid, partial",
    [
        ("0.25,1.50;0.27,1.4", [[0.25, 1.5]], 1, True),               # partial last step
        ("0.25,;0.27,1.47;", [[0.25, np.nan], [0.27, 1.47]], 1, False),  # missing value
        ("0.25;0.27,1.47;", [[0.25, np.nan], [0.27, 1.47]], 1, False),   # missing variable
        ("0.25,1.50,9.99;1.00,2.00;", [[0.25, 1.5], [1.0, 2.0]], 1, False),  # too many values
        ("0.2.5,1.50;", [[np.nan, 1.5]], 0, False),                   # malformed number
        ("abc 0.25, 1.50;\n0.27,1.47;<eos>", [[0.25, 1.5], [0.27, 1.47]], 2, False),  # stray chars
        ("", np.zeros((0, 2)), 0, False),
        (";;", [[np.nan, np.nan], [np.nan, np.nan]], 0, False),
    ],
)
def test_robust_decode(text, expect_rows, n_valid, partial):
    res = LLMTimeCodec(CodecConfig(), alpha=1.0).decode(text, 2)
    np.testing.assert_array_equal(res.values, np.array(expect_rows, dtype=float).reshape(-1, 2))
    assert res.n_valid == n_valid and res.partial == partial


def test_stray_count():
    res = LLMTimeCodec(CodecConfig(), alpha=1.0).decode("x0.25,1.50;y", 2)
    assert res.n_stray == 2 and res.n_valid == 1 and not res.ok


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789.,;-ab \n\x00é")), max_size=60), st.integers(1, 3),
       st.booleans())
def test_decode_never_raises(text, n_vars, no_point):
    res = LLMTimeCodec(CodecConfig(drop_decimal_point=no_point), alpha=1.0).decode(text, n_vars)
    assert res.values.shape == (res.n_steps, n_vars)
    assert 0 <= res.n_valid <= res.n_steps
    assert np.all(np.isnan(res.values) | (res.values >= 0))


@pytest.mark.parametrize("kw",
                         [dict(decimals=-1), dict(scale_mode="zz"), dict(var_sep="."), dict(var_sep=";"),
                          dict(percentile=0)])
def test_config_validation(kw):
    with pytest.raises(FlopcastError):
        CodecConfig(**kw)
