"""Modules generated from the notebooks in nbs/ by notebook2script.py. Do not edit by hand."""
