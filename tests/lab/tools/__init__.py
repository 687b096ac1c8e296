"""Ground-truth tools that share no code with netcheck."""
