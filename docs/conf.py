"""Sphinx configuration for the matfree documentation (built strictly: warnings fail)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "matfree"
author = "the matfree developers"
copyright = "2026, the matfree developers"  # noqa: A001

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.extlinks",
    "sphinx.ext.autosummary",
    "numpydoc",
]
extlinks = {
    "doi": ("https://doi.org/%s", "doi:%s"),
    "arxiv": ("https://arxiv.org/abs/%s", "arXiv:%s"),
}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autodoc_typehints = "none"
autodoc_mock_imports = []
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
suppress_warnings = []
