"""pgolf: a training and evaluation engine for OpenAI's Parameter Golf challenge."""

__version__ = "0.1.0"
