"""Dockerfile syntax: text -> logical lines -> lark tree -> AST -> typed instructions."""
