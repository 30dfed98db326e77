"""Scripts Lightning relaunches for data-parallel runs (see fit.py)."""
