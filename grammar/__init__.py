"""Lark grammar files for the Dockerfile front end (shipped as package data)."""
