"""ztbench: numerical accuracy of zero-truncated Poisson and negative binomial losses."""

__version__ = "0.1.0"
