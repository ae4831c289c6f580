"""Model-assisted labelling: propose boxes, read reviews back, grow the labelled pool, retrain."""
