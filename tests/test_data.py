import h5py
import numpy as np
import pytest

from flopcast.config import SimConfig, SplitConfig
from flopcast.data.dataset import Dataset, Split, split
from flopcast.data.io import load, load_csv, load_h5, save_h5
from flopcast.errors import DataError, FlopcastError


def test_h5_roundtrip(tmp_path, sim_ds):
    p = save_h5(sim_ds, tmp_path / "d.h5")
    back = load_h5(p)
    assert back.n_series == sim_ds.n_series and back.variables == sim_ds.variables
    np.testing.assert_allclose(back.array(), sim_ds.array(), rtol=1e-6)
    np.testing.assert_allclose(back.time, sim_ds.time)
    with h5py.File(p) as f:  # the reference layout
        assert f["trajectories"].shape == (20, 40, 2) and f["time"].shape == (40,)


def test_h5_exact_roundtrip_float32(tmp_path):
    x = np.random.default_rng(1).random((3, 5, 2)).astype(np.float32)
    ds = Dataset(list(x), np.arange(5.0))
    np.testing.assert_array_equal(load_h5(save_h5(ds, tmp_path / "x.h5")).array(), x.astype(np.float64))


def test_ragged_roundtrip(tmp_path):
    ds = Dataset([np.ones((5, 2)), np.full((3, 2), 2.0)])
    back = load_h5(save_h5(ds, tmp_path / "r.h5"))
    assert back.lengths.tolist() == [5, 3] and not back.rectangular
    np.testing.assert_array_equal(back.series[1], np.full((3, 2), 2.0))
    with pytest.raises(DataError, match="different lengths"):
        back.array()


def _write(path, **datasets):
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return path


@pytest.mark.parametrize(
    "datasets, match",
    [
        (dict(trajectories=np.full((2, 3, 2), np.nan)), "missing value"),
        (dict(trajectories=np.ones((2, 3))), r"\(N, T, V\)"),
        (dict(trajectories=np.ones((0, 3, 2))), "empty"),
        (dict(time=np.arange(3.0)), "missing dataset /trajectories"),
        (dict(trajectories=np.ones((2, 3, 2)), time=np.arange(4.0)), "/time"),
        (dict(trajectories=np.array([[[1.0, np.inf]]])), "infinite"),
    ],
)
def test_bad_h5_files_give_one_line_errors(tmp_path, datasets, match):
    p = _write(tmp_path / "bad.h5", **datasets)
    with pytest.raises(DataError, match=match) as e:
        load_h5(p)
    assert "\n" not in str(e.value)


def test_not_hdf5_and_missing(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DataError, match="not a readable HDF5"):
        load_h5(tmp_path / "junk.h5")
    with pytest.raises(DataError, match="not found"):
        load(tmp_path / "nope.h5")
    with pytest.raises(DataError, match="unknown data format"):
        load(tmp_path / "x.parquet")


def test_truncated_h5(tmp_path, sim_ds):
    p = save_h5(sim_ds, tmp_path / "t.h5")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError):
        load_h5(p)


def test_split_seeded_disjoint_complete():
    a, b, c = split(1000, SplitConfig(seed=1)), split(1000, SplitConfig(seed=1)), split(1000, SplitConfig(seed=2))
    assert (len(a.train), len(a.val), len(a.test)) == (800, 100, 100)
    assert np.array_equal(a.test, b.test) and not np.array_equal(a.test, c.test)
    allidx = np.concatenate([a.train, a.val, a.test])
    assert sorted(allidx.tolist()) == list(range(1000))
    assert np.array_equal(Split.from_json(a.to_json()).val, a.val)


def test_split_validation():
    with pytest.raises(FlopcastError, match="sum to 1"):
        SplitConfig(0.5, 0.1, 0.1)


def test_csv_with_id_column(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("id,t,prey,pred\na,0,1.0,2.0\na,1,1.5,2.5\nb,0,3.0,4.0\nb,1,3.5,4.5\nb,2,3.6,4.6\n")
    ds = load_csv(p, id_column="id", time_column="t")
    assert ds.n_series == 2 and ds.variables == ("prey", "pred") and ds.lengths.tolist() == [2, 3]
    np.testing.assert_array_equal(ds.series[1][2], [3.6, 4.6])
    np.testing.assert_array_equal(ds.time, [0, 1, 2])


def test_csv_single_series_and_errors(tmp_path):
    p = tmp_path / "one.csv"
    p.write_text("x,y\n1,2\n3,4\n")
    assert load(p).series[0].shape == (2, 2)
    p.write_text("x,y\n1,-2\n-3.5,4\n")
    np.testing.assert_array_equal(load(p).series[0], [[1, -2], [-3.5, 4]])  # signed values are data
    for body, match in [("", "empty"), ("x,y\n", "no data rows"), ("x,y\n1,2\n3,a\n", "'y' is 'a', not a number"),
                        ("x,y\n1\n", "fields")]:
        p.write_text(body)
        with pytest.raises(DataError, match=match):
            load(p)


def test_simulator_resembles_reference():
    from flopcast.data.simulate import simulate

    x = simulate(SimConfig(n_systems=100, seed=7)).array()
    assert x.shape == (100, 100, 2) and x.min() >= 0 and x.max() <= 15
    assert np.all((x[:, 0] >= 0.8) & (x[:, 0] <= 1.2))  # reference start values
    assert 4 < np.percentile(x, 99.7) < 12
    early, late = x[:, :20].std(1).mean(), x[:, -20:].std(1).mean()
    assert late < early  # damped
    again = simulate(SimConfig(n_systems=100, seed=7)).array()
    np.testing.assert_array_equal(x, again)


def test_real_dataset_loads(real_data_path):
    ds = load(real_data_path)
    assert ds.array().shape == (1000, 100, 2) and ds.time[-1] == 200.0
    sp = split(ds.n_series)
    assert len(sp.test) == 100


def test_headerless_csv_keeps_its_first_row(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("1.7796,2.0\n1.5,2.5\n3,4\n")
    with pytest.warns(UserWarning, match="no header line"):
        ds = load(p)
    assert ds.variables == ("x0", "x1") and ds.series[0].shape == (3, 2)
    np.testing.assert_array_equal(ds.series[0][0], [1.7796, 2.0])


def test_csv_time_column_orders_rows_and_refuses_repeats(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id,time,prey\na,3,30\na,1,10\na,2,20\nb,2,2\nb,1,1\n")
    ds = load(p)
    np.testing.assert_array_equal(ds.series[0][:, 0], [10, 20, 30])
    np.testing.assert_array_equal(ds.series[1][:, 0], [1, 2])
    np.testing.assert_array_equal(ds.time, [1, 2, 3])
    p.write_text("id,time,prey\na,1,1\na,2,2\nb,1,1\nb,1,2\n")
    with pytest.raises(DataError, match="series 'b' has time 1 twice"):
        load(p)


@pytest.mark.parametrize("body, match", [
    (b"prey,prey\n1,2\n3,4\n", "'prey' appear more than once"),
    (bytes(range(256)), "not a text file"),
])
def test_unreadable_csv_is_one_line(tmp_path, body, match):
    p = tmp_path / "x.csv"
    p.write_bytes(body)
    with pytest.raises(DataError, match=match) as e:
        load(p)
    assert "\n" not in str(e.value)


def test_latin1_csv_reads_with_a_warning(tmp_path):
    p = tmp_path / "l.csv"
    p.write_bytes("prey,pr\xe9dateur\n1.0,2.0\n1.5,2.5\n".encode("latin-1"))
    with pytest.warns(UserWarning, match="Latin-1"):
        ds = load(p)
    assert ds.variables == ("prey", "pr\xe9dateur") and ds.series[0].shape == (2, 2)


def test_hdf5_of_strings_is_one_line(tmp_path):
    p = tmp_path / "s.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("trajectories", data=np.array([[["a", "b"]]], dtype="S3"))
    with pytest.raises(DataError, match="/trajectories holds .*not numbers"):
        load(p)


def test_binary_plan_and_damaged_model_config_are_one_line(tmp_path):
    from flopcast.budget.flops import arch_for
    from flopcast.study.plan import load_plan

    (tmp_path / "p.toml").write_bytes(bytes(range(128, 256)))
    with pytest.raises(FlopcastError, match="not a text file"):
        load_plan(tmp_path / "p.toml")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "qwen2", "hidden_size": ')
    with pytest.raises(FlopcastError, match="damaged model config"):
        arch_for(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text('[1, 2]')
    with pytest.raises(FlopcastError, match="damaged model config"):
        arch_for(str(tmp_path / "m"))
