"""The documentation builds in strict mode (every Sphinx warning is an error)."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("numpydoc")
    out = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(ROOT / "docs"), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-5000:]


def test_public_docstrings_have_examples_or_notes():
    """Every public function of the algorithm modules documents itself (numpydoc sections)."""
    import inspect

    import matfree

    missing = []
    for name in matfree.__all__:
        obj = getattr(matfree, name)
        doc = inspect.getdoc(obj) or ""
        if inspect.isfunction(obj) and ("Parameters" not in doc or "Returns" not in doc):
            missing.append(name)
    assert not missing, f"public functions without Parameters/Returns sections: {missing}"
