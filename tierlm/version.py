"""The package version, in a leaf module so that every layer may read it without importing `tierlm`."""

__version__ = "0.1.0"
