"""The command line: reports, JSON, plots, and one-line errors with exit code 2."""

import inspect
import io
import json
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from matfree.cli import _progress_kw, main

FAST = ["--trace-matvecs", "20", "--probes", "6", "--steps", "20", "-k", "3"]


@pytest.fixture
def spd(tmp_path):
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    lam = np.concatenate([np.logspace(0, -1, 20), np.full(40, 1e-9)])
    return (Q * lam) @ Q.T + 1e-3 * np.eye(60), lam + 1e-3


def _run_json(args, capsys):
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_npy_report_matches_dense(tmp_path, spd, capsys):
    M, lam = spd
    path = tmp_path / "h.npy"
    np.save(path, M)
    r = _run_json(["analyze", str(path), *FAST], capsys)
    assert r["n"] == 60
    rows = {row["quantity"]: row for row in r["estimates"]}
    assert rows["trace"]["exact"] == pytest.approx(lam.sum())
    assert rows["logdet"]["exact"] == pytest.approx(np.log(lam).sum())
    # the rank threshold sits in the gap between 1.1e-3 and 0.1: 20 eigenvalues above it
    assert rows["numerical rank"]["exact"] == 20
    assert abs(rows["numerical rank"]["value"] - 20) <= 4 * rows["numerical rank"]["stderr"] + 0.5
    top = r["top_eigenvalues"]
    np.testing.assert_allclose(top["values"], np.sort(lam)[::-1][:3], rtol=1e-7)
    assert r["damped_cg"]["converged"] and r["damped_cg"]["relative_error"] < 1e-5


def test_sparse_and_matrix_market(tmp_path, capsys):
    T = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(40, 40), format="csr")
    sp.save_npz(tmp_path / "t.npz", T)
    scipy.io.mmwrite(str(tmp_path / "t.mtx"), T)
    exact = np.linalg.eigvalsh(T.toarray())
    for name in ("t.npz", "t.mtx"):
        r = _run_json(["analyze", str(tmp_path / name), *FAST], capsys)
        np.testing.assert_allclose(r["top_eigenvalues"]["values"], exact[::-1][:3], rtol=1e-7)


def test_text_report_and_plot(tmp_path, spd, capsys):
    pytest.importorskip("matplotlib")
    np.save(tmp_path / "h.npy", spd[0])
    png = tmp_path / "density.png"
    assert main(["analyze", str(tmp_path / "h.npy"), *FAST, "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "trace" in out and "logdet" in out and "top 3 eigenvalues" in out and "damped CG" in out
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (None, "missing.npy", "no such file"),
        (b"not a matrix", "bad.npy", "cannot read it as .npy"),
        (b"x", "bad.txt", "unknown file type '.txt'"),
        ("rect", "rect.npy", "expected a square matrix"),
        ("nonsym", "ns.npy", "not symmetric"),
        ("nan", "nan.npy", "NaN or Inf"),
    ],
)
def test_bad_files_one_line_exit_2(tmp_path, capsys, content, name, message):
    path = tmp_path / name
    if content == "rect":
        np.save(path, np.ones((3, 4)))
    elif content == "nonsym":
        np.save(path, np.arange(9.0).reshape(3, 3))
    elif content == "nan":
        np.save(path, np.full((3, 3), np.nan))
    elif content is not None:
        path.write_bytes(content)
    assert main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("matfree: error:") and message in err


def test_progress_flag(tmp_path, spd, capsys):
    pytest.importorskip("tqdm")
    np.save(tmp_path / "h.npy", spd[0])
    assert main(["analyze", str(tmp_path / "h.npy"), *FAST, "--progress"]) == 0
    assert "damped CG" in capsys.readouterr().out


# ---------------------------------------------------------------- progress bars


class _Bars:
    """A fake ``tqdm.auto`` recording the description of every bar opened."""

    def __init__(self):
        self.descs = []
        bars = self

        class Tqdm:
            def __init__(self, desc="", **kwargs):
                bars.descs.append(desc)

            def set_postfix(self, postfix, refresh=True):
                pass

            def update(self, n=1):
                pass

            def close(self):
                pass

        self.module = types.ModuleType("tqdm.auto")
        self.module.tqdm = Tqdm


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def bars(monkeypatch):
    pytest.importorskip("tqdm")  # the CLI looks for the real package before it shows bars
    fake = _Bars()
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake.module)
    return fake


@pytest.fixture
def npy(tmp_path, spd):
    np.save(tmp_path / "h.npy", spd[0])
    return str(tmp_path / "h.npy")


@pytest.mark.parametrize(
    ("tty", "flags", "shown"),
    [
        (True, [], True),  # default on a terminal: bars
        (False, [], False),  # default when piped: none
        (True, ["--json"], False),  # JSON output: none
        (True, ["--no-progress"], False),
        (False, ["--progress"], True),
    ],
)
def test_progress_default_follows_the_terminal(npy, bars, monkeypatch, capsys, tty, flags, shown):
    monkeypatch.setattr(sys, "stderr", _Terminal() if tty else io.StringIO())
    assert main(["analyze", npy, *FAST, *flags]) == 0
    assert ("cg" in bars.descs) is shown
    if not shown:
        assert bars.descs == []


def test_progress_reaches_every_step_that_accepts_it(npy, bars, monkeypatch, capsys):
    """eigsh, SLQ and trace get progress=True when their signature has it, and nothing otherwise."""
    import matfree

    # the modules (matfree.lanczos and matfree.trace are also names of functions in matfree)
    lanczos, spectral = sys.modules["matfree.lanczos"], sys.modules["matfree.spectral"]
    seen = {}
    real_eigsh, real_trace, RealSLQ = lanczos.eigsh, matfree.trace, spectral.SLQ
    accepts = {name: "progress" in inspect.signature(f).parameters
               for name, f in [("eigsh", real_eigsh), ("trace", real_trace), ("SLQ", RealSLQ)]}

    def strip(name, kwargs):
        seen[name] = kwargs.get("progress")
        if not accepts[name]:
            kwargs.pop("progress", None)
        return kwargs

    def eigsh(A, k=6, *, progress=False, **kwargs):
        return real_eigsh(A, k, **strip("eigsh", {"progress": progress, **kwargs}))

    def trace(A, *, progress=False, **kwargs):
        return real_trace(A, **strip("trace", {"progress": progress, **kwargs}))

    class SLQ(RealSLQ):
        def __init__(self, A, *, progress=False, **kwargs):
            super().__init__(A, **strip("SLQ", {"progress": progress, **kwargs}))

    monkeypatch.setattr(lanczos, "eigsh", eigsh)
    monkeypatch.setattr(matfree, "trace", trace)
    monkeypatch.setattr(spectral, "SLQ", SLQ)
    assert main(["analyze", npy, *FAST, "--progress"]) == 0
    assert seen == {"eigsh": True, "trace": True, "SLQ": True}
    assert "cg" in bars.descs

    # callees without the parameter are called without it (the real ones, before the merge)
    seen.clear()
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert main(["analyze", npy, *FAST, "--no-progress"]) == 0
    assert seen == {"eigsh": False, "trace": False, "SLQ": False}


def test_progress_kw_asks_the_signature():
    def with_it(a, *, progress=False):
        pass

    def without(a, **kwargs):
        pass

    assert _progress_kw(with_it, True) == {"progress": True}
    assert _progress_kw(with_it, False) == {}
    assert _progress_kw(without, True) == {}  # **kwargs alone is not a promise
    assert _progress_kw(len, True) == {}


def test_progress_without_tqdm(npy, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    assert main(["analyze", npy, *FAST, "--progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--progress needs tqdm" in err and "pip install" in err
    # on a terminal the default quietly goes without bars
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert main(["analyze", npy, *FAST]) == 0


def test_bad_option_exit_2(capsys):
    assert main(["analyze", "--probes", "0"]) == 2
    assert "--probes must be >= 1" in capsys.readouterr().err


def test_builtin_demo_as_a_module():
    """`python -m matfree analyze` on the built-in problem, with small budgets, as JSON."""
    pytest.importorskip("sklearn")
    out = subprocess.run(
        [sys.executable, "-m", "matfree", "analyze", "--json", *FAST],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    r = json.loads(out.stdout)
    assert r["n"] == 650 and "softmax regression" in r["source"]
    top = r["top_eigenvalues"]
    np.testing.assert_allclose(top["values"], top["exact"], rtol=1e-6)
