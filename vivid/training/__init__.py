"""Training: prepared clips (data preparation and their reader), datasets, losses, the stage 1 / stage 2 loop."""
