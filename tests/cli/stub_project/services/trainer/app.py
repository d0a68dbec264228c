"""What the stack's fork server imports before it forks this stand-in: nothing it needs."""
