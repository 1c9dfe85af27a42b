"""The package version, written into every checkpoint (kept equal to pyproject.toml's)."""

__version__ = "0.2.0"
