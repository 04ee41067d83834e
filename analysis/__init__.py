"""Analysis of a stbench results store: do STN and CoordConv layers help, converge faster, or only cost time?

``load`` reads the store, ``stats`` and ``metrics`` compute the tables, ``figures``
and ``checkpoints`` draw the pictures, ``report`` writes HTML, Markdown and CSV
(``python -m analysis.report --results-dir DIR --out DIR``).
"""
