"""cloud-p2p node service."""

__version__ = "0.1.0"
