"""The one exception type the command-line entry points turn into a clean error line."""


class MnistCnnError(Exception):
    """A problem the user can fix; the message names it and says how."""
