"""Training of FLOAT: stage 1 (motion auto-encoder) and stage 2 (flow-matching transformer)."""
