"""``llamarig bench``: what a measured run of a deployed service says, kept and compared (pure logic)."""
