"""tfn_md: Tensor Field Networks (Thomas et al., arXiv:1802.08219) as ASE potentials."""

from .ase.calculator import TFNCalculator
from .checkpoint import load_potential, save_potential
from .model import TFN, TFNConfig
from .version import __version__

__all__ = ["TFN", "TFNCalculator", "TFNConfig", "__version__", "load_potential", "save_potential"]
