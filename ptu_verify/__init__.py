"""ptu-verify: load testing and capacity verification for Bailian PTU deployments."""

__version__ = "0.1.0"

__all__ = ["__version__"]
