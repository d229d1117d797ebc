"""The README's code and commands stay true."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_tour_runs():
    """The first Python block (wrapping an HVP) runs as written."""
    code = _python_blocks()[0]
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    A = namespace["A"]
    assert A.num_matvecs == 4


def test_readme_questions_run():
    """The tour of the questions runs as written and answers them correctly."""
    (code,) = [b for b in _python_blocks() if "from matfree import precond" in b]
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    np, X, A = namespace["np"], namespace["X"], namespace["A"]
    H = X.T @ X / X.shape[0]
    assert A.num_matvecs > 0
    import matfree

    assert int(round(float(matfree.rank(A, rtol=1e-3, rng=0).value))) == np.linalg.matrix_rank(
        H, tol=1e-3 * np.linalg.norm(H, 2)
    )


def test_ci_runs_the_readme_test_command():
    """.ci/run executes exactly the README's test command."""
    commands = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    test_cmd = [c.strip() for c in commands if "pytest" in c][0]
    # the README's command minus its venv creation, which .ci/run does first
    tail = test_cmd.split("&& ", 2)[2]
    ci = (ROOT / ".ci" / "run").read_text()
    assert tail.replace("pip install -e", "pip install -q -e").replace("pytest -q", "pytest -q") in ci


def test_ci_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], check=True)
