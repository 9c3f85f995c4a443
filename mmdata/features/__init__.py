"""The feature cache: encoder outputs per medium, content-addressed, computed in batches."""
