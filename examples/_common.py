"""Helpers shared by the example scripts (this file is not an example itself).

Every script in ``examples/``

* prints matfree's answers beside dense references in rows
  ``quantity | matfree [± stderr] | dense reference | |diff| | allowed | verdict``
  (:class:`Table`), which ``tests/test_examples.py`` re-reads and re-checks;
* takes ``--fast``, ``--out DIR`` and ``--threads N`` (:func:`parse_args`) and
  pins its thread pools (:func:`limit_threads`);
* writes its PNG figures to ``--out`` or to a fresh temporary directory
  (:func:`output_dir`, :func:`pyplot`, :func:`save_figure`);
* exits with status 1 when a row disagrees with its reference (:func:`exit_status`).

The scripts import from here with ``from _common import ...``: Python puts the
folder of the script it runs (``python examples/x.py``) on ``sys.path``.  Only
presentation and set-up live here; the matfree calls stay in the scripts.
"""

import argparse
import math
import os
import sys
import tempfile

import numpy as np

FIGURE_HELP = "directory for the PNG figure (default: a new temporary directory)"


# ------------------------------------------------------------------ report
class Table:
    """The comparison rows 'estimate | dense reference | |diff| | allowed | verdict'.

    The widths of the first three columns fit each script's quantity names
    and numbers; ``digits`` is the number of significant digits printed for
    the estimate and the reference.  The ``|diff|`` column is computed from
    the unrounded numbers and printed to 3 significant digits, the allowance
    likewise.
    """

    def __init__(self, name_width=30, estimate_width=24, reference_width=18, digits=10):
        self.name_width = name_width
        self.estimate_width = estimate_width
        self.reference_width = reference_width
        self.digits = digits

    def header(self):
        """Print the column titles."""
        n, e, r = self.name_width, self.estimate_width, self.reference_width
        titles = f"{'quantity':<{n}s} | {'matfree':>{e}s} | {'dense reference':>{r}s}"
        print(f"  {titles} | {'|diff|':>9s} | {'allowed':>9s} |")

    def check(self, name, estimate, reference, allowed, stderr=None):
        """Print one row and return whether ``|estimate - reference| <= allowed``."""
        n, e, r, d = self.name_width, self.estimate_width, self.reference_width, self.digits
        diff = abs(estimate - reference)
        ok = bool(diff <= allowed)
        est = f"{estimate:.{d}g}" + (f" ± {stderr:.2g}" if stderr is not None else "")
        verdict = "ok" if ok else "MISMATCH"
        print(f"  {name:<{n}s} | {est:>{e}s} | {reference:>{r}.{d}g} | {diff:9.2e} | {allowed:9.2e} | {verdict}")
        return ok


def exit_status(ok, message="MISMATCH with the dense reference"):
    """0 if every check passed; otherwise print ``message`` to stderr and return 1."""
    if not ok:
        print(message, file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ set-up
def parse_args(doc, argv, fast_help, out_help=FIGURE_HELP, threads_help="BLAS threads (default 1)"):
    """The command line every example takes: ``--fast``, ``--out DIR``, ``--threads N``.

    ``doc`` is the script's docstring (its first line describes the script in
    ``--help``); ``fast_help`` says what ``--fast`` makes smaller.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help=fast_help)
    parser.add_argument("--out", default=None, help=out_help)
    parser.add_argument("--threads", type=int, default=1, help=threads_help)
    return parser.parse_args(argv)


def limit_threads(num_threads, framework=None):
    """Pin the thread pools to ``num_threads``.

    The problems are small: extra threads buy little, and on a busy machine
    (CI runs several jobs per core) they spin and contend; a first
    ``numpy.linalg.eigh`` took 2 s instead of 0.05 s, and a script ran three
    times slower, on a loaded 2-core machine.

    The BLAS pools are pinned through threadpoolctl, if it is installed.
    ``framework="torch"`` also pins PyTorch's intra-op pool.
    ``framework="jax"`` also makes XLA's CPU backend single-threaded when
    ``num_threads`` is 1; XLA reads its flags once, so call this before
    ``import jax``.
    """
    if framework == "jax" and num_threads == 1 and "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        one = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{flags} {one}".strip()
    if framework == "torch":
        import torch

        torch.set_num_threads(num_threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(num_threads)


# ----------------------------------------------------------------- figures
def output_dir(out, name):
    """The folder for the figures: ``--out`` if given, else a new ``matfree-<name>-*`` temporary one.

    So running an example never writes into the working directory.
    """
    return out or tempfile.mkdtemp(prefix=f"matfree-{name}-")


def pyplot(out, what="figure"):
    """``matplotlib.pyplot`` on the non-interactive Agg backend, with the folder ``out`` created.

    ``None`` when matplotlib is not installed (figures are optional: the
    script then says "no <what>" and goes on).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no {what}")
        return None
    os.makedirs(out, exist_ok=True)
    return plt


def save_figure(fig, out, filename):
    """Lay out ``fig``, write it to ``out/filename`` as a PNG (110 dpi) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(os.path.join(out, filename), dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- spectra
def smoothed_density(eigenvalues, grid, bandwidth):
    """(1/n) Σ_i N(t; λ_i, h²) on ``grid``: exact eigenvalues smoothed by a Gaussian kernel.

    With ``bandwidth`` that of an SLQ density estimate, this is the exact
    curve that estimate should be compared with.
    """
    d = (grid[:, None] - eigenvalues[None, :]) / bandwidth
    return np.exp(-0.5 * d * d).sum(1) / (eigenvalues.size * bandwidth * math.sqrt(2 * math.pi))
