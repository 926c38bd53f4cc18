"""Nipype workflows: ``init_*_wf`` factories that only wire interfaces (no arithmetic)."""
