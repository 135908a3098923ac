"""The one base class of problems a user can fix (a bad value, a missing or unsafe file, an empty dataset).

The CLI prints such an error's message as one line and exits 2, without a traceback; anything else is a
bug and keeps its traceback. Each concern's own error classes derive from this and from the built-in
class they always were (``ValueError``, ``RuntimeError``, ``pickle.UnpicklingError``).
"""


class UserError(Exception):
    """A problem the user can fix; the message names the file or key and what would be right."""
