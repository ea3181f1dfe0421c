"""Domain model: value objects and events, free of I/O."""
