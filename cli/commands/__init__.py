"""Command implementations; cli/main.py only registers them."""
