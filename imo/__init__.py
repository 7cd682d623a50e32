"""imo: Initial Model Offerings with opp/ai-verified inference."""

__version__ = "0.1.0"
