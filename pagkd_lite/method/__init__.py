"""The method: GKD-Pro, GKD-Den, the activation maps and token labels they use, the slow
loop references they are tested against, and one Distiller per training method.

:mod:`~pagkd_lite.method.distill` is the registry (name -> method); a new method is one
Distiller class and one entry there.
"""
