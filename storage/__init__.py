"""Files written so that a reader never sees a partial one (the bottom of the layers: it imports nothing of ours)."""
