"""Hydra sweeper on Optuna's ask-and-tell API: ``hydra/sweeper=breastcls_optuna``."""
