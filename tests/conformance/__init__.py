"""Suites written once and run on every implementation that opts in (fsspec- and CPython-style).

``storage.StorageSuite``: the ``Storage`` protocol; ``behaviour.BehaviourSuite``:
what every backend must do, gated by its declared ``Capabilities``.
"""
