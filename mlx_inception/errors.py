"""The errors this package raises on bad input; each message is one line that says what to do."""


class InceptionError(Exception):
    """Base class: the CLI prints these as ``error: <message>`` and exits non-zero."""


class CheckpointError(InceptionError):
    """A weight file or directory that cannot be read, converted or matched to the network."""


class ImageError(InceptionError):
    """A file that cannot be decoded as an image."""


class DataError(InceptionError):
    """A data set folder that cannot be used (no classes, empty class, ...)."""


class HubError(InceptionError):
    """A Hugging Face Hub download or upload that failed."""
