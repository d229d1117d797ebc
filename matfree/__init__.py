"""matfree: matrix-free linear algebra for Hessians and other large symmetric operators.

Turn a function that returns H·v into a :class:`LinearOperator` and ask it
for its trace, diagonal, log-determinant, rank, eigenpairs and spectral
density, or solve damped systems with it -- on NumPy, CuPy, PyTorch or JAX
arrays, without ever forming H.
"""

from matfree.diagonal import diagonal
from matfree.hessian import (
    block_diagonal_hessian,
    diagonal_approximation,
    empirical_fisher,
    from_grad,
    from_hvp,
    from_jax,
    from_torch,
    gauss_newton,
    outer_product,
)
from matfree.operators import (
    BlockDiagonal,
    Damped,
    Dense,
    Diagonal,
    FunctionOperator,
    Identity,
    LinearOperator,
    LowRank,
    NonFiniteError,
    Sparse,
    aslinearoperator,
    damped,
)
from matfree.lanczos import block_lanczos, eigsh, lanczos
from matfree.quasinewton import DFP, LBFGS, LSR1
from matfree.results import EigResult, Estimate, SolveResult
from matfree.solvers import cg, minres, steihaug_cg
from matfree.spectral import SLQ, Density, logdet, rank, spectral_density, trace_function
from matfree.sketch import NystromSketch, SketchResult, nystrom, range_finder, reig, rsvd
from matfree.trace import frobenius_norm, trace

__version__ = "0.1.0"

__all__ = [
    # operators
    "LinearOperator",
    "FunctionOperator",
    "Dense",
    "Diagonal",
    "Identity",
    "LowRank",
    "BlockDiagonal",
    "Sparse",
    "Damped",
    "NonFiniteError",
    "aslinearoperator",
    "damped",
    # Hessians
    "from_hvp",
    "from_grad",
    "from_torch",
    "from_jax",
    "gauss_newton",
    "outer_product",
    "empirical_fisher",
    "block_diagonal_hessian",
    "diagonal_approximation",
    # estimators
    "trace",
    "diagonal",
    "frobenius_norm",
    # Lanczos and stochastic Lanczos quadrature
    "lanczos",
    "block_lanczos",
    "eigsh",
    "SLQ",
    "Density",
    "trace_function",
    "logdet",
    "spectral_density",
    "rank",
    # solvers
    "cg",
    "minres",
    "steihaug_cg",
    # sketches and quasi-Newton operators
    "range_finder",
    "rsvd",
    "reig",
    "nystrom",
    "NystromSketch",
    "SketchResult",
    "LBFGS",
    "LSR1",
    "DFP",
    # results
    "Estimate",
    "EigResult",
    "SolveResult",
]
