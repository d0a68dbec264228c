"""Templates of the files phase 5 writes into a generated project (see bundle.py)."""
