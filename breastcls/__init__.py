"""breastcls: Lightning + Hydra experiments for breast-cancer image classification."""

__version__ = "0.1.0"
