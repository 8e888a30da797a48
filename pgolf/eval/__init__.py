"""Evaluation: window plans and the evaluator; scoring goes through pgolf.metric."""
