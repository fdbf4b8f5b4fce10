"""tfn_md: Tensor Field Networks (Thomas et al., arXiv:1802.08219) as ASE potentials."""

__version__ = "0.1.0"

from .calculator import TFNCalculator
from .io import load_potential, save_potential
from .model import TFN, TFNConfig

__all__ = ["TFN", "TFNCalculator", "TFNConfig", "__version__", "load_potential", "save_potential"]
