"""Serving: the model server (`server`, the serving image's predictor and `submit.py
serve`) and deploying a version to a Vertex AI endpoint (`endpoint`).

May import every other layer of components; nothing in components imports it.
"""
