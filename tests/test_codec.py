import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flopcast.config import CodecConfig
from flopcast.encoding.codec import LLMTimeCodec
from flopcast.encoding.scaling import Scale, collapsed, fit_scale
from flopcast.errors import FlopcastError

values = arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 4)),
                elements=st.floats(0, 500, allow_nan=False, allow_infinity=False))


def test_reference_format():
    c = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(1.0))
    assert c.encode(np.array([[0.25, 1.5], [0.27, 1.47]])) == "0.25,1.50;0.27,1.47;"


def test_alpha_scales_and_decodes_to_original_units():
    x = np.array([[2.0, 4.0], [6.0, 8.0]])
    c = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(2.0))
    text = c.encode(x)
    assert text == "1.00,2.00;3.00,4.00;"
    np.testing.assert_allclose(c.decode(text, 2).values, x)


@settings(max_examples=200, deadline=None)
@given(values, st.integers(0, 4))
def test_roundtrip_is_rounding(x, decimals):
    c = LLMTimeCodec(CodecConfig(decimals=decimals), scale=Scale.from_state(1.0))
    res = c.decode(c.encode(x), x.shape[1])
    assert res.ok and res.n_steps == len(x)
    np.testing.assert_array_equal(res.values, np.round(x, decimals))


@settings(max_examples=200, deadline=None)
@given(values, st.integers(0, 4))
def test_roundtrip_without_decimal_point(x, decimals):
    c = LLMTimeCodec(CodecConfig(decimals=decimals, drop_decimal_point=True), scale=Scale.from_state(1.0))
    text = c.encode(x)
    assert "." not in text
    np.testing.assert_allclose(c.decode(text, x.shape[1]).values, np.round(x, decimals), rtol=0,
                               atol=1e-9 * (1 + x.max()))


@settings(max_examples=100, deadline=None)
@given(values, st.floats(0.01, 100))
def test_roundtrip_with_alpha(x, alpha):
    c = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(alpha))
    np.testing.assert_allclose(c.decode(c.encode(x), x.shape[1]).values, np.round(x / alpha, 2) * alpha, rtol=1e-12,
                               atol=1e-12)


def test_no_ceiling_values_above_ten():
    c = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(1.0))
    text = c.encode(np.array([[12.346, 123.4]]))
    assert text == "12.35,123.40;"
    assert c.decode(text, 2).values[0, 1] == 123.4


def test_drop_point_format():
    c = LLMTimeCodec(CodecConfig(drop_decimal_point=True), scale=Scale.from_state(1.0))
    assert c.encode(np.array([[0.05, 1.5]])) == "5,150;"


def test_pooled_scale_maps_the_percentile_to_the_target():
    train = np.linspace(0, 100, 1001)
    sc = fit_scale(train[:, None], CodecConfig(percentile=99.7, target=10, per_variable=False))
    assert sc.alpha[0] == pytest.approx(np.percentile(train, 99.7) / 10) and sc.beta[0] == 0
    assert fit_scale(train[:, None], CodecConfig(scale_mode="none")) == Scale.identity()


def test_each_variable_gets_its_own_scale():
    x = np.column_stack([np.linspace(0, 13000, 50), np.linspace(3, 6, 50)])
    sc = fit_scale(x, CodecConfig())
    np.testing.assert_allclose(sc.alpha, np.percentile(x, 99.7, axis=0) / 10)
    pooled = fit_scale(x, CodecConfig(per_variable=False))
    assert pooled.alpha.shape == (1,) and pooled.alpha[0] == pytest.approx(np.percentile(x, 99.7) / 10)


def test_offset_is_llmtimes_min_less_a_share_of_the_range():
    x = np.array([[1000.0], [1001.0], [1002.0]])
    sc = fit_scale(x, CodecConfig(offset=True))
    assert sc.beta[0] == pytest.approx(1000 - 0.3 * 2)
    assert np.all(sc.apply(x) > 0) and np.ptp(sc.apply(x)) > 1  # the variation is written, not the level


def test_signed_values_get_a_minus_and_a_scale_from_their_magnitude():
    c = LLMTimeCodec(CodecConfig(scale_mode="per_series"))
    x = np.array([[-2.0, 1.0], [0.5, -1.0], [1.0, 0.0]])
    sc = c.series_scale(x)
    np.testing.assert_allclose(sc.alpha, np.percentile(np.abs(x), 99.7, axis=0) / 10)
    text = c.encode(x, sc)
    assert text.startswith("-10.") and ",-10.00;" in text
    np.testing.assert_allclose(c.decode(text, 2, sc).values, x, atol=1e-2 * sc.alpha.max())


def test_per_series_scale_from_context_only():
    c = LLMTimeCodec(CodecConfig(scale_mode="per_series"))
    a = np.array([[1.0], [2.0], [3.0]])
    assert c.series_scale(a).alpha[0] == pytest.approx(np.percentile(a, 99.7) / 10)
    assert c.series_scale(a * 10).alpha[0] == pytest.approx(10 * c.series_scale(a).alpha[0])


def test_old_codec_states_mean_one_pooled_alpha():
    c = LLMTimeCodec.from_state({"decimals": 2, "scale_mode": "global", "alpha": 2.5})
    assert not c.config.per_variable and c.scale == Scale.from_state(2.5)
    assert c.encode(np.array([[5.0, 2.5]])) == "2.00,1.00;"
    again = LLMTimeCodec.from_state(LLMTimeCodec.fit(CodecConfig(offset=True), np.eye(3) * 4).state())
    assert again.scale == LLMTimeCodec.fit(CodecConfig(offset=True), np.eye(3) * 4).scale


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20), st.integers(1, 3), st.floats(-4, 4), st.booleans(), st.integers(0, 2**31 - 1))
def test_roundtrip_with_signs_and_scales_1e4_apart(T, V, log_level, offset, seed):
    """Any signed (T, V) data, each variable at its own magnitude up to 1e4 apart: decoding the text gives each value
    back to the codec's resolution, and no variable that varies collapses."""
    rng = np.random.default_rng(seed)
    magnitudes = 10.0 ** (log_level + rng.uniform(-2, 2, V))
    x = rng.normal(size=(T, V)) * magnitudes
    c = LLMTimeCodec(CodecConfig(scale_mode="per_series", offset=offset))
    sc = c.series_scale(x)
    back = c.decode(c.encode(x, sc), V, sc)
    assert back.ok and back.n_steps == T
    np.testing.assert_allclose(back.values, x, rtol=0, atol=0.5e-2 * sc.alpha.max() * (1 + 1e-9))
    assert collapsed(x, sc, 2) == []


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
        ("-0.25,-1.50;", [[-0.25, -1.5]], 1, False),                  # signs
        ("0.2-5,--1.50;1.00-,-;", [[np.nan, np.nan], [np.nan, np.nan]], 0, False),  # stray signs
    ],
)
def test_robust_decode(text, expect_rows, n_valid, partial):
    res = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(1.0)).decode(text, 2)
    np.testing.assert_array_equal(res.values, np.array(expect_rows, dtype=float).reshape(-1, 2))
    assert res.n_valid == n_valid and res.partial == partial


def test_stray_count():
    res = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(1.0)).decode("x0.25,1.50;y", 2)
    assert res.n_stray == 2 and res.n_valid == 1 and not res.ok


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789.,;-ab \n\x00é")), max_size=60), st.integers(1, 3),
       st.booleans())
def test_decode_never_raises(text, n_vars, no_point):
    res = LLMTimeCodec(CodecConfig(drop_decimal_point=no_point), scale=Scale.from_state(1.0)).decode(text, n_vars)
    assert res.values.shape == (res.n_steps, n_vars)
    assert 0 <= res.n_valid <= res.n_steps
    assert np.all(np.isnan(res.values) | (np.abs(res.values) < 10.0 ** 60))


@pytest.mark.parametrize("kw",
                         [dict(decimals=-1), dict(scale_mode="zz"), dict(var_sep="."), dict(var_sep=";"),
                          dict(percentile=0)])
def test_config_validation(kw):
    with pytest.raises(FlopcastError):
        CodecConfig(**kw)
