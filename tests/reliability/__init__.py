"""The bad-input catalogue of tests/test_reliability.py: cases, input files, runner, docs/errors.md."""
