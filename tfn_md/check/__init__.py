"""A potential's report card: physical properties computed with the potential and with
its reference calculator side by side (``tfn-md check``). :mod:`~tfn_md.check.crystal`
(cubic crystals: equation of state, elastic constants, vacancy, surfaces, phonons);
:mod:`~tfn_md.check.report` (the table); :mod:`~tfn_md.check.cli`."""
