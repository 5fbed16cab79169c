"""Reproductions by name: studies of vanishing and exploding gradients, each a claim, its
source, a protocol (a sweep), the outcome expected with its tolerance, and the check that
decides it.

`catalogue.py` holds the studies as data; `measures.py` the quantities a check can read
from a finished member; `verdicts.py` decides each claim from what was measured.
Adding a study is adding an entry to the catalogue.
"""
