"""The contract users rely on (DESIGN §2), stated once and run against every backend.

See ``conftest.py`` for how a backend joins the suite.
"""
