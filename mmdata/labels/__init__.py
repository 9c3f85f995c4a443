"""Label Studio round trip: windows out as tasks, annotators' labels back onto records."""
