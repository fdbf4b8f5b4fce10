"""tfn_md: Tensor Field Networks (Thomas et al., arXiv:1802.08219) as ASE potentials."""

__version__ = "0.1.0"

from .model import TFN, TFNConfig  # noqa: E402
from .io import load_potential, save_potential  # noqa: E402
from .calculator import TFNCalculator  # noqa: E402

__all__ = ["TFN", "TFNConfig", "TFNCalculator", "load_potential", "save_potential", "__version__"]
