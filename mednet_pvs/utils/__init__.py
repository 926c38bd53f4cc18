"""Small shared utilities (no science here)."""
