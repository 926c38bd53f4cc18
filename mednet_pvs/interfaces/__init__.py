"""Thin Nipype interfaces around the core functions (no science here)."""
