"""Renderers: pure ``Report -> str`` functions. The CLI decides where the text goes."""
