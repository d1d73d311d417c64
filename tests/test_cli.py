"""``torchem fit`` / ``torchem predict``: saved models read back with weights_only=True, the
printed summary against scikit-learn's own computations from the saved parameters, and one
clear message (never a traceback) for every kind of bad file."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from torchem import GaussianMixture, KMeans
from torchem.__main__ import main
from torchem._cli import load_model


@pytest.fixture
def blobs_csv(tmp_path, blobs):
    path = tmp_path / "blobs.csv"
    np.savetxt(path, blobs, delimiter=",", header="x,y,z", comments="")
    return path, blobs


def _np(t) -> np.ndarray:
    return torch.as_tensor(t).double().numpy()


def _summary(out: str) -> dict:
    rows = [line.split(None, 1) for line in out.splitlines() if line.strip()]
    return {key: value for key, value in rows}


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_fit_gmm_saves_a_model_and_reports_sklearn_figures(tmp_path, blobs_csv, covariance_type, capsys):
    from sklearn.mixture import GaussianMixture as SkGMM

    path, X = blobs_csv
    out = tmp_path / "gm.pt"
    assert main(["fit", str(path), "--model", "gmm", "-k", "3", "--covariance-type", covariance_type,
                 "--double", "--seed", "1", "--out", str(out)]) == 0
    printed = _summary(capsys.readouterr().out)
    saved = torch.load(out, weights_only=True)
    assert saved["model"] == "gmm" and saved["params"]["n_components"] == 3
    assert saved["params"]["covariance_type"] == covariance_type
    _, model = load_model(str(out))
    # scikit-learn scores the saved parameters independently.
    ref = SkGMM(3, covariance_type=covariance_type)
    ref.weights_, ref.means_ = _np(model.weights_), _np(model.means_)
    ref.covariances_, ref.precisions_cholesky_ = _np(model.covariances_), _np(model.precisions_cholesky_)
    loglik = float(printed["log-likelihood"].split()[0])
    np.testing.assert_allclose(loglik, ref.score(X), rtol=1e-6)
    np.testing.assert_allclose(float(printed["BIC"]), ref.bic(X), rtol=1e-5)
    assert int(printed["iterations"].split()[0]) == model.n_iter_ >= 1
    assert printed["converged"] == "yes"

    labels = tmp_path / "labels.npy"
    assert main(["predict", str(out), str(path), "--out", str(labels)]) == 0
    np.testing.assert_array_equal(np.load(labels), ref.predict(X))
    capsys.readouterr()
    assert main(["predict", str(out), str(path), "--proba"]) == 0
    proba = np.loadtxt(capsys.readouterr().out.splitlines(), delimiter=",")
    np.testing.assert_allclose(proba, ref.predict_proba(X), atol=1e-6)


def test_fit_kmeans_from_npz_key(tmp_path, blobs, capsys):
    path = tmp_path / "d.npz"
    np.savez(path, train=blobs, other=blobs[:, :1])
    out = tmp_path / "km.pt"
    assert main(["fit", str(path), "--key", "train", "--model", "kmeans", "-k", "3", "--out", str(out)]) == 0
    printed = _summary(capsys.readouterr().out)
    _, model = load_model(str(out))
    centres = _np(model.cluster_centers_).astype(np.float64)
    d2 = ((blobs[:, None, :] - centres[None]) ** 2).sum(-1)
    np.testing.assert_allclose(float(printed["inertia"]), d2.min(1).sum(), rtol=1e-5)
    assert main(["predict", str(out), str(path), "--key", "train"]) == 0
    labels = np.array(capsys.readouterr().out.split(), dtype=int)
    np.testing.assert_array_equal(labels, d2.argmin(1))


def test_fit_binomial_counts(tmp_path, capsys):
    rng = np.random.default_rng(0)
    counts = np.concatenate([rng.binomial(5, 0.2, (300, 4)), rng.binomial(5, 0.8, (300, 4))]).astype(float)
    path, out = tmp_path / "c.npy", tmp_path / "bm.pt"
    np.save(path, counts)
    assert main(["fit", str(path), "--model", "binomial", "--n-trials", "5", "-k", "2", "--out", str(out)]) == 0
    _, model = load_model(str(out))
    assert model.n_trials == 5
    np.testing.assert_allclose(np.sort(_np(model.probs_).mean(1)), [0.2, 0.8], atol=0.03)
    out_csv = tmp_path / "labels.csv"
    assert main(["predict", str(out), str(path), "--out", str(out_csv)]) == 0
    labels = np.loadtxt(out_csv, dtype=int)
    assert len(set(labels[:300])) == 1 and len(set(labels[300:])) == 1 and labels[0] != labels[-1]


def test_binomial_trials_per_feature(tmp_path, capsys):
    rng = np.random.default_rng(1)
    counts = np.stack([rng.binomial(3, 0.5, 200), rng.binomial(6, 0.5, 200)], 1).astype(float)
    path, out = tmp_path / "c.npy", tmp_path / "bm.pt"
    np.save(path, counts)
    assert main(["fit", str(path), "--model", "binomial", "--n-trials", "3,6", "-k", "1", "--out", str(out)]) == 0
    _, model = load_model(str(out))
    assert list(model.n_trials) == [3, 6]
    np.testing.assert_allclose(_np(model.probs_)[0], counts.mean(0) / [3, 6], rtol=1e-5)  # closed form for K=1
    assert main(["fit", str(path), "--model", "binomial", "--n-trials", "3", "-k", "1", "--out", str(out)]) == 1
    assert "counts above n_trials" in capsys.readouterr().err


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_text(content)
    return str(path)


BAD_FILES = [
    ("missing.npy", None, "does not exist"),
    ("text.csv", "a,b\n1,2\n3,oops\n", "'oops' is not a number"),
    ("ragged.csv", "1,2\n3\n", "same number of columns"),
    ("empty.csv", "\n", "empty"),
    ("nan.npy", np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]]), "NaN or infinite"),
    ("inf.npy", np.array([[1.0, np.inf], [2.0, 3.0], [4.0, 5.0]]), "NaN or infinite"),
    ("huge.npy", np.array([[1.0, 1e300], [2.0, 3.0], [4.0, 5.0]]), "too large for float32; fit with --double"),
    ("flat.npy", np.arange(6.0), "expected 2-D"),
    ("cube.npy", np.zeros((2, 3, 4)), "expected 2-D"),
    ("words.npy", np.array([["a", "b"], ["c", "d"]]), "not numbers"),
    ("broken.npy", "not an npy file", "cannot read"),
    ("data.txt", "1,2\n", "unknown file type"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_get_one_clear_message(tmp_path, name, content, message, capsys):
    path = str(tmp_path / name) if content is None else _write(tmp_path, name, content)
    assert main(["fit", path, "--model", "gmm", "-k", "2", "--out", str(tmp_path / "m.pt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("torchem fit: error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()


def test_bad_inputs_to_predict(tmp_path, blobs, capsys):
    data = _write(tmp_path, "x.npy", blobs)
    model = str(tmp_path / "m.pt")
    assert main(["fit", data, "--model", "kmeans", "-k", "2", "--out", model]) == 0
    saved = torch.load(model, weights_only=True)
    # hand-edited files (found by fuzzing: raw KeyError and TypeError text, or "call fit")
    torch.save({k: v for k, v in saved.items() if k != "state_dict"}, tmp_path / "nostate.pt")
    torch.save({**saved, "params": {**saved["params"], "bogus": 1}}, tmp_path / "param.pt")
    torch.save({**saved, "state_dict": KMeans(2).state_dict()}, tmp_path / "unfitted.pt")
    cases = [
        ([model, _write(tmp_path, "two.npy", blobs[:, :2])], "has 2 features but the model was fitted on 3"),
        ([model, data, "--proba"], "no probabilities"),
        ([_write(tmp_path, "junk.pt", "junk"), data], "not a model saved by torchem fit"),
        ([str(tmp_path / "nostate.pt"), data], "damaged model: it has no state dict"),
        ([str(tmp_path / "param.pt"), data], "damaged model: its parameters do not make a kmeans"),
        ([str(tmp_path / "unfitted.pt"), data], "holds an unfitted model: write it with torchem fit"),
        ([str(tmp_path / "none.pt"), data], "does not exist"),
        ([model, data, "--out", str(tmp_path / "no" / "dir.npy")], "does not exist"),
    ]
    capsys.readouterr()
    for args, message in cases:
        assert main(["predict", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("torchem predict: error:") and message in err, (args, err)


def test_bad_requests_to_fit(tmp_path, blobs, capsys):
    data = _write(tmp_path, "x.npy", blobs)
    out = str(tmp_path / "m.pt")
    cases = [
        (["--model", "gmm", "-k", "1000"], "n_components"),  # more components than samples
        (["--model", "bernoulli", "-k", "2"], "binary"),
        (["--model", "kmeans", "-k", "2", "--covariance-type", "diag"], "--model gmm and bgmm only"),
        (["--model", "gmm", "-k", "2", "--out", str(tmp_path / "no" / "m.pt")], "does not exist"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--model", "gmm", "-k", "2", "--device", "cuda"], "CUDA is not available"))
        cases.append((["--model", "gmm", "-k", "2", "--device", "cuda:7"], "--device cuda:7: CUDA is not available"))
    for args, message in cases:
        assert main(["fit", data, "--out", out, *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("torchem fit: error:") and message in err, (args, err)


def test_console_script_exits_non_zero_without_traceback(tmp_path):
    bad = _write(tmp_path, "nan.npy", np.array([[np.nan, 1.0]]))
    proc = subprocess.run([sys.executable, "-m", "torchem", "fit", bad, "--model", "gmm", "-k", "1",
                           "--out", str(tmp_path / "m.pt")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "NaN" in proc.stderr and "Traceback" not in proc.stderr


def test_files_from_the_review_read_right_or_fail_clearly(tmp_path, blobs, capsys):
    # a UTF-8 byte-order mark before the header (Excel) keeps every data row
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfa,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in blobs).encode())
    out = tmp_path / "m.pt"
    assert main(["fit", str(bom), "--model", "kmeans", "-k", "3", "--out", str(out)]) == 0
    assert f"{len(blobs)} samples" in capsys.readouterr().out
    # a first row with a typo is data with a bad value, not a header
    typo = tmp_path / "typo.csv"
    typo.write_text("1,2,x\n3,4,5\n6,7,8\n")
    assert main(["fit", str(typo), "--model", "kmeans", "-k", "1", "--out", str(out)]) == 1
    assert "line 1, column 3" in capsys.readouterr().err
    # an archive named .npy, and an array named .npz
    np.savez(tmp_path / "z.npz", a=blobs)
    (tmp_path / "z.npz").rename(tmp_path / "zip.npy")
    assert main(["fit", str(tmp_path / "zip.npy"), "--model", "kmeans", "-k", "2", "--out", str(out)]) == 1
    assert "is an .npz archive" in capsys.readouterr().err
    np.save(tmp_path / "arr.npy", blobs)
    (tmp_path / "arr.npy").rename(tmp_path / "arr.npz")
    assert main(["fit", str(tmp_path / "arr.npz"), "--model", "kmeans", "-k", "2", "--out", str(out)]) == 1
    assert "is an .npy array" in capsys.readouterr().err
    # an output that cannot be written fails before fitting, with one line
    assert main(["fit", str(bom), "--model", "kmeans", "-k", "2", "--out", "/proc/no.pt"]) == 1
    assert "cannot write /proc/no.pt" in capsys.readouterr().err
    # predict --out keeps the given name (np.save would add .npy to an upper-case .NPY)
    labels = tmp_path / "labels.NPY"
    assert main(["predict", str(out), str(bom), "--out", str(labels)]) == 0
    assert labels.exists() and not (tmp_path / "labels.NPY.npy").exists()
    assert np.load(labels).shape == (len(blobs),)
    # the demo reports bad requests in one line too
    assert main(["demo", "--n", "2", "--k", "3"]) == 1
    assert "n_samples" in capsys.readouterr().err


def test_guard_reports_out_of_memory_and_empty_runtime_errors(capsys):
    from argparse import Namespace

    from torchem._cli import _guarded

    def oom(args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

    def empty(args):
        raise RuntimeError()

    assert _guarded(oom)(Namespace(command="fit")) == 1
    assert "out of GPU memory; use --device cpu" in capsys.readouterr().err
    assert _guarded(empty)(Namespace(command="fit")) == 1
    assert "RuntimeError" in capsys.readouterr().err


def test_output_into_a_pipe_closed_early_ends_quietly(tmp_path, blobs):
    # `torchem predict m.pt x.npy | head -1`: the reader leaves after one line; the rest of
    # the output has nowhere to go, which is no error (exit 0, nothing on stderr).
    model, data = str(tmp_path / "m.pt"), tmp_path / "x.npy"
    assert main(["fit", _write(tmp_path, "fit.npy", blobs), "--model", "kmeans", "-k", "3", "--out", model]) == 0
    np.save(data, np.tile(blobs, (400, 1)))  # 240,000 labels: far more than a pipe holds
    proc = subprocess.Popen([sys.executable, "-m", "torchem", "predict", model, str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert first.strip() in (b"0", b"1", b"2")
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err, err


def test_bare_command_prints_the_help(capsys):
    # as pip, cargo and docker do: the help on stdout, status 0 (a wrong subcommand stays a usage error)
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: torchem") and "predict" in out and err == ""
    with pytest.raises(SystemExit) as exc:
        main(["bogus"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("command, out, allowed", [
    ("predict", "labels.txt", ".npy or .csv"),
    ("predict", "labels", ".npy or .csv"),
    ("fit", "model.npy", ".pt or .pth"),
    ("fit", "model.csv", ".pt or .pth"),
])
def test_output_type_is_checked_before_any_work(tmp_path, command, out, allowed, capsys):
    # the model and the data do not exist: the output's name is refused first, and no file
    # named .txt ever receives .npy bytes
    target = tmp_path / out
    args = ["predict", str(tmp_path / "none.pt")] if command == "predict" else ["fit"]
    args += [str(tmp_path / "none.npy"), "--out", str(target)]
    if command == "fit":
        args += ["--model", "gmm", "-k", "2"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"torchem {command}: error: --out {target}") and allowed in err, err
    assert len(err.strip().splitlines()) == 1 and not target.exists()


def test_predict_does_not_write_over_its_input(tmp_path, blobs, capsys):
    data = tmp_path / "x.csv"
    np.savetxt(data, blobs, delimiter=",")
    before = data.read_bytes()
    model = str(tmp_path / "m.pt")
    assert main(["fit", str(data), "--model", "kmeans", "-k", "3", "--out", model]) == 0
    assert main(["predict", model, str(data), "--out", str(data)]) == 1
    assert "is also an input" in capsys.readouterr().err and data.read_bytes() == before


@pytest.fixture(params=["numpy", "pyarrow", "pandas"])
def csv_reader(request, monkeypatch):
    """CSV files are read by pandas' C reader when it is installed, else by pyarrow's when it
    is, by numpy's otherwise; each must read the same numbers and give the same errors."""
    if request.param != "pandas":
        monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` raises ImportError
    if request.param == "numpy":
        monkeypatch.setitem(sys.modules, "pyarrow", None)
    pytest.importorskip({"numpy": "numpy", "pyarrow": "pyarrow.csv", "pandas": "pandas"}[request.param])
    return request.param


CSV_TEXTS = {
    "header, BOM, CRLF": "\ufeffa,b,c\r\n1,2,3\r\n-4.5e3,.5,6.\r\n",
    "blank lines and spaces": "\n x , y \n\n 1 , 2 \n  \n3,\t4\n\n",
    "lone CR line ends": "a,b\r1,2\r3,4\r",
    "blank lone CRs before the header": "\r\r\ra,b\r1,2\r",
    "rows longer than 64 kB": "\n".join(",".join([f"{i}.25"] * 20_000) for i in range(3)),
    "no final line end": "1,2\n3,4",
    "Python's spellings": "1_000,+2\nInfinity,-inf\n",  # the infinities are refused later, as NaN is
    "one column": "x\n1\n2\n3\n",
    # 17 significant digits over the whole exponent range, subnormals included: every reader
    # must round each to the nearest double, as Python's float does
    "hard roundings": "\n".join(",".join(f"{m:.17g}" for m in row) for row in (
        np.random.default_rng(3).normal(size=(400, 5)) * 10.0 ** np.random.default_rng(4).integers(-320, 300, size=(400, 5)))),
}


@pytest.mark.parametrize("name", list(CSV_TEXTS))
def test_csv_reads_what_python_float_reads(tmp_path, csv_reader, name):
    from torchem._cli import _read_csv

    text = CSV_TEXTS[name]
    path = tmp_path / "x.csv"
    path.write_bytes(text.encode())
    rows = [line.strip() for line in text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    rows = [row for row in rows if row]
    if not any(_is_float(v) for v in rows[0].split(",")):
        rows = rows[1:]
    expected = np.array([[float(v) for v in row.split(",")] for row in rows])
    got = _read_csv(str(path))
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_csv_errors_name_their_line_and_column_deep_in_the_file(tmp_path, csv_reader, capsys):
    rows = "\n".join(f"{i},{i / 7:.6f}" for i in range(70_000))  # more than one block of the line scan
    cases = [("bad.csv", f"x,y\n{rows}\n\n1,abc\n2,3\n", "line 70003, column 2: 'abc' is not a number"),
             ("ragged.csv", f"x,y\n{rows}\n1,2,3\n", "line 70002: 3 values where the first data line has 2"),
             ("gap.csv", f"{rows}\n1,\n", "line 70001, column 2: '' is not a number")]
    for name, text, message in cases:
        path = tmp_path / name
        path.write_text(text)
        assert main(["fit", str(path), "--model", "gmm", "-k", "2", "--out", str(tmp_path / "m.pt")]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"torchem fit: error: {path}, {message}") and len(err.strip().splitlines()) == 1, err


def test_csv_is_read_in_about_the_memory_of_its_numbers(tmp_path, csv_reader):
    # the parsed array (8 bytes a value) is about the size of the text (10 characters a value
    # here); a field-by-field loop held every line as a Python string as well (~2.8 times the file)
    import tracemalloc

    from torchem._cli import load_array

    path = tmp_path / "big.csv"
    np.savetxt(path, np.random.default_rng(0).normal(size=(20_000, 16)), delimiter=",", fmt="%.6f",
               header=",".join(f"f{j}" for j in range(16)), comments="")
    tracemalloc.start()
    try:
        X = load_array(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert X.shape == (20_000, 16)
    assert peak < 1.5 * path.stat().st_size, peak / path.stat().st_size


def test_parquet_needs_pyarrow_and_says_which_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1")
    assert main(["fit", str(path), "--model", "gmm", "-k", "2", "--out", str(tmp_path / "m.pt")]) == 1
    err = capsys.readouterr().err
    assert "needs pyarrow" in err and "pip install 'torchem[parquet]'" in err and len(err.strip().splitlines()) == 1


def test_parquet_columns_are_the_features(tmp_path, blobs, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"x": blobs[:, 0], "y": blobs[:, 1].astype(np.float32), "z": (blobs[:, 2] * 100).astype(np.int64)})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=128)  # several row groups
    expected = np.column_stack([blobs[:, 0], blobs[:, 1].astype(np.float32), (blobs[:, 2] * 100).astype(np.int64)])
    np.save(tmp_path / "d.npy", expected)
    printed = []
    for name in ("d.npy", "d.parquet"):
        assert main(["fit", str(tmp_path / name), "--model", "kmeans", "-k", "3", "--double",
                     "--out", str(tmp_path / f"{name}.pt")]) == 0
        printed.append(_summary(capsys.readouterr().out))
    assert printed[0]["inertia"] == printed[1]["inertia"] and printed[0]["data"] == printed[1]["data"]
    assert main(["predict", str(tmp_path / "d.parquet.pt"), str(tmp_path / "d.parquet"), "--out",
                 str(tmp_path / "labels.npy")]) == 0
    _, model = load_model(str(tmp_path / "d.npy.pt"))
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), model.predict(expected))

    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "name": ["a", "b", "c"]}), tmp_path / "words.parquet")
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "y": [1.0, None, 3.0]}), tmp_path / "gap.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    for name, message in [("words.parquet", "column 'name' holds string values, not numbers"),
                          ("gap.parquet", "missing (null) value at row 2, column 2 ('y')"),
                          ("junk.parquet", "cannot read")]:
        assert main(["fit", str(tmp_path / name), "--model", "gmm", "-k", "1", "--out", str(tmp_path / "m.pt")]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_npy_files_are_streamed_not_read_whole(tmp_path, dtype, capsys):
    # np.load(mmap_mode="r"): fit and predict read the file by blocks of rows, so a file larger
    # than memory can be fitted (a float64 file is converted block by block to float32)
    import tracemalloc

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1_000_000, 8)).astype(dtype)  # larger than the fit's chunks
    X[::2] += 4.0
    path, model = tmp_path / "x.npy", str(tmp_path / "m.pt")
    np.save(path, X)
    fit = ["fit", str(path), "--model", "gmm", "--covariance-type", "diag", "-k", "2", "--max-iter", "2", "--out", model]
    np.save(tmp_path / "warm.npy", X[:1000])
    assert main([*fit[:1], str(tmp_path / "warm.npy"), *fit[2:]]) == 0  # torch imports some modules on first use
    capsys.readouterr()
    peaks = []
    for args in (fit, ["predict", model, str(path), "--out", str(tmp_path / "labels.npy")]):
        tracemalloc.start()
        try:
            assert main(args) == 0
            peaks.append(tracemalloc.get_traced_memory()[1] / path.stat().st_size)
        finally:
            tracemalloc.stop()
    assert max(peaks) < 0.5, peaks
    assert "1,000,000 samples, 8 features" in capsys.readouterr().out
    labels = np.load(tmp_path / "labels.npy")
    assert len(set(labels[::2])) == 1 and len(set(labels[1::2])) == 1 and labels[0] != labels[1]
    _, fitted = load_model(model)  # answers in tensors, as a model fitted from any other file
    assert isinstance(fitted.means_, torch.Tensor) and fitted.means_.dtype == torch.float32


@pytest.mark.cuda
def test_npy_that_fits_on_the_gpu_is_copied_there_once(tmp_path, blobs, capsys):
    from torchem._cli import _model_input

    path = tmp_path / "x.npy"
    np.save(path, blobs)
    X = _model_input(np.load(path, mmap_mode="r"), torch.device("cuda"), torch.float32)
    assert X.is_cuda and X.dtype == torch.float32
    np.testing.assert_array_equal(X.cpu().numpy(), blobs.astype(np.float32))
    printed = []
    for device in ("cpu", "cuda"):
        assert main(["fit", str(path), "--model", "gmm", "-k", "3", "--double", "--device", device,
                     "--out", str(tmp_path / f"{device}.pt")]) == 0
        printed.append(_summary(capsys.readouterr().out))
    np.testing.assert_allclose(float(printed[1]["log-likelihood"].split()[0]),
                               float(printed[0]["log-likelihood"].split()[0]), rtol=1e-6)


def test_select_prints_the_criterion_table_of_the_grid_and_saves_the_chosen_model(tmp_path, blobs_csv, capsys):
    from torchem import GaussianMixture, GaussianMixtureIC

    path, X = blobs_csv
    out = tmp_path / "best.pt"
    assert main(["select", str(path), "-k", "1-3,5", "--covariance-types", "full,diag", "--double",
                 "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    ic = GaussianMixtureIC((1, 2, 3, 5), covariance_type=("full", "diag"), random_state=0).fit(X)
    header = lines[1].split()
    assert header == ["n_components", "1", "2", "3", "5"]
    for row, name in enumerate(("full", "diag")):
        cells = lines[2 + row].split()
        assert cells[0] == name
        np.testing.assert_allclose([float(c.rstrip("*")) for c in cells[1:]], ic.bic_[row], rtol=1e-5)
    assert lines[2 + ic.best_index_[0]].count("*") == 1
    assert f"covariance_type={ic.covariance_type_}, n_components={ic.n_components_}" in lines[4]
    _, model = load_model(str(out))
    single = GaussianMixture(ic.n_components_, covariance_type=ic.covariance_type_, random_state=0).fit(X)
    np.testing.assert_allclose(_np(model.means_), single.means_, rtol=1e-8, atol=1e-10)
    for bad in (["-k", "4-2"], ["--covariance-types", "full,bad"]):
        with pytest.raises(SystemExit) as exc:
            main(["select", str(path), *bad])
        assert exc.value.code == 2 and "expected" in capsys.readouterr().err


def test_fit_bgmm_switches_unneeded_components_off_and_predicts(tmp_path, blobs_csv, capsys):
    from torchem import BayesianGaussianMixture

    path, X = blobs_csv
    out = tmp_path / "bgm.pt"
    assert main(["fit", str(path), "--model", "bgmm", "-k", "6", "--weight-concentration-prior", "0.01",
                 "--covariance-type", "diag", "--double", "--out", str(out)]) == 0
    printed = _summary(capsys.readouterr().out)
    name, model = load_model(str(out))
    assert name == "bgmm" and isinstance(model, BayesianGaussianMixture)
    direct = BayesianGaussianMixture(6, covariance_type="diag", weight_concentration_prior=0.01, random_state=0).fit(X)
    np.testing.assert_allclose(_np(model.means_), direct.means_, rtol=1e-8)
    np.testing.assert_allclose(_np(model.covariance_prior_), direct.covariance_prior_, rtol=1e-12)
    used = int((direct.weights_ > 0.01).sum())
    assert printed["components"] == f"used  {used} of 6 (weight above 0.01)"
    np.testing.assert_allclose(float(printed["lower"].split()[1]), direct.lower_bound_, rtol=1e-6)
    labels = tmp_path / "labels.npy"
    assert main(["predict", str(out), str(path), "--out", str(labels)]) == 0
    np.testing.assert_array_equal(np.load(labels), direct.predict(X))
    assert main(["fit", str(path), "--model", "gmm", "-k", "2", "--weight-concentration-prior", "0.1",
                 "--out", str(out)]) == 1
    assert "--model bgmm only" in capsys.readouterr().err


def test_nan_policy_fits_and_predicts_rows_with_missing_entries(tmp_path, blobs, capsys):
    rng = np.random.default_rng(0)
    holes = np.where(rng.random(blobs.shape) < 0.2, np.nan, blobs)
    holes[np.isnan(holes).all(1), 0] = 0.0
    data, out = _write(tmp_path, "holes.npy", holes), str(tmp_path / "m.pt")
    assert main(["fit", data, "--model", "gmm", "-k", "3", "--nan-policy", "marginalize", "--double", "--out", out]) == 0
    assert "log-likelihood" in capsys.readouterr().out
    _, model = load_model(out)
    direct = GaussianMixture(3, nan_policy="marginalize", random_state=0).fit(torch.from_numpy(holes))
    np.testing.assert_allclose(_np(model.means_), _np(direct.means_), rtol=0, atol=1e-8)
    assert main(["predict", out, data]) == 0  # the saved model reads NaN entries as missing
    labels = np.loadtxt(capsys.readouterr().out.splitlines(), dtype=int)
    np.testing.assert_array_equal(labels, _np(direct.predict(torch.from_numpy(holes))))
    # a CSV spelling missing entries "nan"; omit counts the rows it leaves out
    csv = _write(tmp_path, "holes.csv", "a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in holes))
    assert main(["fit", csv, "--model", "gmm", "-k", "3", "--nan-policy", "omit", "--out", out]) == 0
    n_rows = int(np.isnan(holes).any(1).sum())
    assert f"warning: {n_rows} row(s) of X hold NaN and were left out" in capsys.readouterr().err


def test_nan_policy_bad_requests(tmp_path, blobs, capsys):
    inf = _write(tmp_path, "inf.npy", np.where(np.eye(*blobs.shape) > 0, np.inf, blobs))
    nan = _write(tmp_path, "nan.npy", np.where(np.eye(*blobs.shape) > 0, np.nan, blobs))
    out = str(tmp_path / "m.pt")
    cases = [
        ([inf, "--model", "gmm", "--nan-policy", "marginalize"], "infinite value(s)"),
        ([nan, "--model", "gmm"], "--nan-policy omit or marginalize"),
        ([nan, "--model", "kmeans", "--nan-policy", "omit"], "--nan-policy applies to the mixtures only"),
    ]
    for args, message in cases:
        assert main(["fit", *args, "-k", "2", "--out", out]) == 1
        err = capsys.readouterr().err
        assert err.startswith("torchem fit: error:") and message in err, (args, err)
    with pytest.raises(SystemExit):
        main(["fit", nan, "--model", "gmm", "-k", "2", "--nan-policy", "ignore", "--out", out])
def test_fit_with_labels_from_csv_or_npy(tmp_path, capsys):
    """``--labels FILE``: the semi-supervised fit (component k is class k), the same whether
    the data is read whole (.csv) or streamed with the labels in its batches (.npy)."""
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    X = np.stack([rng.normal(size=600) * 3.0, rng.normal(size=600) * 0.5 + 1.2 * y], 1)
    labels = np.where(np.arange(600) % 20 == 0, y, -1)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    np.save(tmp_path / "x.npy", X)
    np.savetxt(tmp_path / "labels.csv", labels, fmt="%d", header="label", comments="")
    np.save(tmp_path / "labels.npy", labels)
    means = []
    for data, lab in (("x.csv", "labels.csv"), ("x.npy", "labels.npy")):
        out = tmp_path / f"{data}.pt"
        assert main(["fit", str(tmp_path / data), "--model", "gmm", "-k", "2", "--double", "--labels", str(tmp_path / lab),
                     "--out", str(out)]) == 0
        assert _summary(capsys.readouterr().out)["labelled"].startswith("30 samples")
        _, model = load_model(str(out))
        pred = model.predict(torch.from_numpy(X)).numpy()
        assert adjusted_rand_score(y, pred) > 0.4 and np.mean(pred == y) > 0.8
        means.append(_np(model.means_))
    np.testing.assert_allclose(means[1], means[0], rtol=1e-9, atol=1e-12)
    bad = [("short.npy", labels[:-1], "one label per sample"), ("range.npy", np.full(600, 2), "names component 2"),
           ("half.npy", np.full(600, 0.5), "whole numbers"), ("grid.npy", np.zeros((600, 2)), "shape (600, 2)"),
           ("labels.txt", None, "use .npy or .csv"), ("missing.npy", None, "does not exist")]
    for name, value, message in bad:
        if value is not None:
            np.save(tmp_path / name, value)
        elif name.endswith(".txt"):
            (tmp_path / name).write_text("0\n")
        assert main(["fit", str(tmp_path / "x.csv"), "--model", "gmm", "-k", "2", "--labels", str(tmp_path / name),
                     "--out", str(tmp_path / "m.pt")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("torchem fit: error:") and "--labels" in err and message in err, (name, err)
