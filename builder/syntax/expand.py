"""BuildKit's shell-word expansion (the ``shell.Lex`` of the Dockerfile frontend).

Contract (implemented below):

- ``ShellLex(escape="\\\\")``: the escape token is ``\\`` or a backtick.
- ``process_word(word, env) -> str``: expand one word; quotes are processed and removed,
  no word splitting. Raises :class:`builder.errors.ExpansionError` on bad syntax.
- ``process_words(word, env) -> list[str]``: expand then split on unquoted whitespace.
- ``process_word_with_matches(word, env) -> tuple[str, frozenset[str]]``: also the names of
  the variables that were looked up and found in ``env`` (used to know which ARGs a step used).
"""
