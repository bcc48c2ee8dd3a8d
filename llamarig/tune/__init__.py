"""``llamarig tune``: candidates that fit, measured on the rig in turn, ranked by their noise."""
