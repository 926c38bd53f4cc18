"""HTML reports: one per participant (figures, tables, QC flags, methods) and one for the group."""
