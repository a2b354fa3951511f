"""VividPortraits: animate a portrait with the head motion and expressions of a driving video."""
__version__ = "0.1.0"
