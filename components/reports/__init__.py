"""Reports: self-contained HTML pages with their charts (`render`) and the training run's
summary step (`training`).

May import: the shared modules only; callers pass in what a report shows.
"""
