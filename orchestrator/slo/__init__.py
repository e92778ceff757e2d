"""Service-level objectives: budget arithmetic, the availability projection and its report."""
