"""The report's sections, one module each: ``section(analysis) -> blocks.Section`` (its text, tables and
figures). The outline (which sections, in which order) is ``analysis.report.OUTLINE``."""
