"""Neural-network pieces of a TFN: radial functions, the convolution, point-wise layers."""

from .convolution import Edges, TFNConvolution, tfn_paths
from .layers import NormNonlinearity, SelfInteraction, safe_norm
from .radial import BesselBasis, GaussianBasis, RadialMLP, polynomial_envelope

__all__ = [
    "BesselBasis",
    "Edges",
    "GaussianBasis",
    "NormNonlinearity",
    "RadialMLP",
    "SelfInteraction",
    "TFNConvolution",
    "polynomial_envelope",
    "safe_norm",
    "tfn_paths",
]
