"""The bookkeeping fields of ``tfn-md learn``: written by the loop into every frame it
labels (``atoms.info``, then per-frame dataset columns), read back by the loop on resume
and by the report."""

__all__ = ["AL_BOND", "AL_BROKEN", "AL_CONTACT", "AL_DISSOCIATION", "AL_ENERGY_SPREAD",
           "AL_INDEX", "AL_ITERATION", "AL_NEW_BOND", "AL_SCORE", "AL_SPREAD", "AL_STRETCH",
           "BOOKKEEPING"]

AL_ITERATION, AL_INDEX = "al_iteration", "al_index"  # which selected frame a label is
AL_SPREAD = "al_force_spread"  # eV/A: the frame's force spread (explore.statistic) then
AL_ENERGY_SPREAD = "al_energy_spread"  # eV: the energy uncertainty then
AL_SCORE = "al_score"  # what selection ranks by (the loop's module docstring)
AL_CONTACT = "al_contact"  # A: the closest non-bonded pair, in frames flagged for it
AL_NEW_BOND = "al_new_bond"  # the closest pair not bonded at the start, / (r_i + r_j)
AL_BROKEN = "al_broken"  # the longest start bond / the sum of covalent radii, where flagged
AL_DISSOCIATION = "al_dissociation"  # which free-atom, stretched-bond or hop frame a label is
AL_STRETCH = "al_stretch"  # stretched-bond and hop frames (energy only): the pair's distance
#                            / the sum of their covalent radii
AL_BOND = "al_bond"  # the pair: "i-j" a stretched bond, "h>y" hydrogen h moved toward y
BOOKKEEPING = frozenset({AL_ITERATION, AL_INDEX, AL_SPREAD, AL_ENERGY_SPREAD, AL_SCORE,
                         AL_CONTACT, AL_NEW_BOND, AL_BROKEN, AL_DISSOCIATION, AL_STRETCH, AL_BOND})
