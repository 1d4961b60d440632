"""Reliability and security tests (issue 6): faults, bad input, secrets, least privilege."""
