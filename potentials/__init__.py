"""Trained potentials shipped with tfn_md (installed as the package ``tfn_md.potentials``,
so ``TFNCalculator("ethanol-gfn2")`` finds them in a source checkout and in a wheel)."""
