"""Optional progress bars (tqdm) for long runs: ``progress=True`` in eigsh, SLQ, adaptive trace, CG.

``progress_bar(progress, total, desc)`` returns an object with
``update(n=1, **postfix)`` and ``close()``; with ``progress=False`` it does
nothing and costs nothing.  tqdm is imported only when a bar is asked for.
"""

from __future__ import annotations


class _NoBar:
    def update(self, n=1, **postfix):
        """Do nothing."""

    def close(self):
        """Do nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Bar:
    def __init__(self, total, desc, unit):
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise ImportError(
                "progress=True needs tqdm; install it with pip install 'matfree-hessian[progress]'"
            ) from None
        self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, n=1, **postfix):
        """Advance by ``n`` and show ``postfix`` (e.g. the current error estimate)."""
        if postfix:
            self._bar.set_postfix({k: f"{v:.3g}" if isinstance(v, float) else v for k, v in postfix.items()}, refresh=False)
        self._bar.update(n)

    def close(self):
        """Remove the bar."""
        self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress_bar(progress, total=None, desc="", unit="matvec"):
    """A tqdm bar when ``progress`` is true, else a no-op object."""
    if not progress:
        return _NoBar()
    return _Bar(total, desc, unit)
