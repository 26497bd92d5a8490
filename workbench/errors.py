"""Errors the user sees as one line: what went wrong and where (file, line, field, step)."""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base of every error the CLI prints as a one-line cause (exit status 1)."""


class InputError(WorkbenchError):
    """A file or dataset that cannot be read as asked; the message names file, line, field."""


class SchemaError(WorkbenchError):
    """A frame lacks a column its kind requires, or a column has the wrong type."""


class PipelineError(WorkbenchError):
    """An invalid pipeline (unknown step, bad option, kind mismatch) or a failing step."""


class NotFoundError(WorkbenchError):
    """A dataset, version or run that the workspace does not hold."""


class QueryError(WorkbenchError):
    """A typed-in SQL query that is refused (not one read-only SELECT, or reaching past the
    workspace's datasets) or fails; the message says what and why."""


class LoopError(WorkbenchError):
    """An invalid loop file, or a loop that cannot go on (a failed round, a changed config)."""
