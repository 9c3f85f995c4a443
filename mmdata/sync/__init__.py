"""Clock sync (in progress)."""
