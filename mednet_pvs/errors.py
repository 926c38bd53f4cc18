"""Exceptions that carry a message meant for the user (file name and reason)."""

from __future__ import annotations


class MednetPVSError(Exception):
    """Base class: an error whose message is complete enough to show without a traceback."""


class InputImageError(MednetPVSError):
    """An input image is missing, unreadable or unusable; the message names the file and why."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelError(MednetPVSError):
    """A model directory is missing, malformed or fails verification."""


class UsageError(MednetPVSError):
    """Bad command-line usage detected after parsing (exit code 2)."""
