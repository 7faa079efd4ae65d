"""The scripts in ``examples/``, run as a user runs them."""
