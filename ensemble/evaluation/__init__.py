"""How good a run is, on tiles its networks never trained on.

- :mod:`.evaluate`: every model of a run scored on its validation split (``ensemble evaluate``);
- :mod:`.crossfit`: fusers applied cross-fitted over folds of validation rover stops;
- :mod:`.bootstrap`: paired bootstrap intervals over tiles;
- :mod:`.table`: the comparison table of an evaluation;
- :mod:`.curve`: the budget curve, every model at the snapshots of its training;
- :mod:`.score`: a prediction file scored against true masks (``ensemble score``).

The modules are imported one by one (``ensemble score`` loads no torch).
"""
