"""A HyperShift management cluster in a box, for tests and demos."""
