"""Pure functions over prediction tables: votes, thresholds, summaries and reports.

Nothing in this package starts Ray or touches a model: it reads arrays and tables and returns
arrays, tables and rich renderables, so `dupes report RUN` works on any machine.
"""
