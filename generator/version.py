"""The package's version: a leaf module, so any layer (the site, the workers, the CLI) may import it."""

__version__ = "0.1.0"
