"""Ensembles beyond averaging: member inputs joined per sample, and stacking meta-learners."""
