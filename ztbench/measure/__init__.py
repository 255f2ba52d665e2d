"""Candidates x points -> errors -> summary rows: evaluating candidates against certified
references (accuracy), and the adversarial search for their worst inputs.
"""
