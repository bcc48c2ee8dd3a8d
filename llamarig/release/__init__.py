"""From resolved host data to a release: placements, build plan, flags, units, power, the lock."""
