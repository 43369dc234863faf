"""The one training loop, and device / precision choice."""
