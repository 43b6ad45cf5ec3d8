"""The package version, in a module of its own so that any module (the manifest's created_by among
them) can read it without importing the package root; setup.cfg reads it from here."""
__version__ = "0.1.0"
