"""Training: building parts from a recipe, the training step, checkpoints and the loop."""
