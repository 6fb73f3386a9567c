"""Exceptions shared by the pure-Python format code and the native runtime."""


class FormatError(ValueError):
    """A .dcz file (or byte string) is not a valid dcrt container.

    The message names the section and the field that broke the spec
    (docs/format.md), e.g. ``LAYER[2] 'fc6': colptr[17]: decreasing``.
    """


class NativeUnavailableError(ImportError):
    """The compiled runtime (dcrt._core) is not importable in this environment."""
